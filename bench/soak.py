"""Soak test for `edgecap narrate`: hours of a looping video with camera faults.

    python bench/soak.py --minutes 60 [--model models/edgecap-base] [--speech espeak] [--fast]

Plays a video (default: one made from a few photos, with cross-fades) over and over,
paced like a camera unless --fast, through a fault injector that every minute of
source time drops the camera for 4 s, darkens the view for 3 s and hands over 1 s of
corrupt frames. Reports, as JSON: crashes, unexpected errors, resident memory growth
(VmRSS from /proc/self/status, after a warm-up), threads and open files at start and
end, and how many utterances, captions, cues and faults there were.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # camera_faults: the fault injection the tests use

from edgecap.core.bundle import BundleError  # noqa: E402
from edgecap.core.decoding import preset  # noqa: E402
from camera_faults import Faults, FaultySource  # noqa: E402
from edgecap.audio.speech import SpeechWorker  # noqa: E402
from edgecap.audio.voices import SpeechError, make_voice  # noqa: E402
from edgecap.core.image import read_image  # noqa: E402
from edgecap.narration.frames import Looping, Paced, VideoSource  # noqa: E402
from edgecap.narration.narrate import EventLog, NarrateOptions, Narrator  # noqa: E402
from edgecap.narration.scene import SceneOptions  # noqa: E402

PHOTOS = REPO.parent / "shared" / "data" / "captioned" / "images"
FAULTS = Faults(drops=((10.0, 14.0),), dark=((25.0, 28.0),), corrupt=((40.0, 41.0),), period=60.0)
FPS, SIZE = 10, (320, 240)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def make_video(path: Path, n_scenes: int = 6, seconds: float = 4.0) -> Path:
    photos = sorted(PHOTOS.glob("*.jpg"))[::331][:n_scenes] if PHOTOS.is_dir() else []
    if len(photos) < 2:
        photos = sorted((REPO / "assets").glob("*.jpg"))
    stills = [cv2.resize(read_image(p), SIZE, interpolation=cv2.INTER_AREA) for p in photos]
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    for i, still in enumerate(stills):
        nxt = stills[(i + 1) % len(stills)]
        for _ in range(int(seconds * FPS)):
            noisy = np.clip(still + rng.normal(0, 2.0, still.shape), 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR))
        for k in range(1, 10):
            writer.write(cv2.cvtColor(cv2.addWeighted(still, 1 - k / 10, nxt, k / 10, 0), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


# Random-weight test encoders put every photo within ~0.2 cosine distance of every other
# (see tests/test_narrate.py), so the trained model's scene threshold would hide every cut.
RANDOM_WEIGHTS_THRESHOLD = 0.01


def load_model(model: Path | None, workdir: Path):
    """(captioner, scene threshold, name): the given bundle, else the shipped one, else the
    tiny random test bundle (needs torch)."""
    from edgecap.core.model import OnnxCaptioner, default_model_dir

    path = model or default_model_dir()
    if model is not None or (path / "manifest.json").is_file():
        captioner = OnnxCaptioner.load(path)
        random = str(captioner.bundle.manifest.get("provenance", {}).get("weights", "")).startswith("random")
        return (captioner, RANDOM_WEIGHTS_THRESHOLD if random else SceneOptions.semantic_threshold,
                f"{captioner.bundle.name} ({path})")
    from export.tiny import build_tiny_bundle

    _, tiny = build_tiny_bundle(workdir / "edgecap-tiny")
    return OnnxCaptioner.load(tiny), RANDOM_WEIGHTS_THRESHOLD, "tiny random test bundle"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--video", type=Path, default=None, help="default: one made from a few photos")
    ap.add_argument("--speech", default="none", choices=["none", "espeak", "pyttsx3"],
                    help="speech engine; its speech goes to WAV files in a temporary folder")
    ap.add_argument("--fast", action="store_true", help="do not pace the video like a camera")
    ap.add_argument("--scene-threshold", type=float, default=None,
                    help="semantic scene-change threshold (default: the narrator's, 0.01 for random test weights)")
    ap.add_argument("--sample-seconds", type=float, default=5.0, help="how often to read VmRSS")
    ap.add_argument("--log-json", type=Path, default=None, help="keep the narration event log here")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="soak: %(levelname)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="edgecap-soak-") as tmp:
        workdir = Path(tmp)
        try:
            captioner, threshold, model_name = load_model(args.model, workdir)
            voice = make_voice(args.speech)
        except (BundleError, SpeechError) as exc:
            print(f"soak: error: {exc}", file=sys.stderr)
            return 2
        threshold = args.scene_threshold if args.scene_threshold is not None else threshold
        video = args.video or make_video(workdir / "loop.avi")

        source = FaultySource(Looping(lambda: VideoSource(video)), FAULTS)
        if not args.fast:
            source = Paced(source)
        events = EventLog(args.log_json or workdir / "events.jsonl")
        speech = SpeechWorker(voice, replace_pending=True, on_event=events,
                              wav_dir=workdir / "wav" if args.speech != "none" else None)
        narrator = Narrator(source, captioner, preset("brief"), speech, events,
                            SceneOptions(semantic_threshold=threshold), NarrateOptions())
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        start = time.monotonic()

        def sample():
            while not done.wait(args.sample_seconds):
                samples.append((time.monotonic() - start, rss_mb()))
                if time.monotonic() - start >= args.minutes * 60:
                    narrator.stop()

        sampler = threading.Thread(target=sample, daemon=True)
        threads_start, files_start, rss_start = threading.active_count(), open_files(), rss_mb()
        sampler.start()
        crash = None
        try:
            narrator.run()
        except Exception:  # noqa: BLE001 - the report is the point
            crash = traceback.format_exc()
        done.set()
        sampler.join()
        speech.close()
        events.close()
        wavs = len(list((workdir / "wav").glob("*.wav"))) if (workdir / "wav").is_dir() else 0
        elapsed = time.monotonic() - start

    # Memory after warm-up (the first tenth of the run, at least 30 s): the allocator, the
    # onnxruntime arenas and the feature cache all fill up early and then must stay flat.
    warm = [r for t, r in samples if t >= max(30.0, 0.1 * elapsed)] or [r for _, r in samples] or [rss_start]
    hours = max((elapsed - max(30.0, 0.1 * elapsed)) / 3600, 1e-9)
    report = {
        "minutes": round(elapsed / 60, 2),
        "model": model_name,
        "scene_threshold": threshold,
        "paced": not args.fast,
        "speech": args.speech,
        "crashed": crash is not None,
        "crash": crash,
        "errors": narrator.stats.get("errors", 0),
        "rss_mb": {"start": round(rss_start, 1), "after_warmup": round(warm[0], 1), "end": round(warm[-1], 1),
                   "max": round(max(r for _, r in samples) if samples else rss_start, 1),
                   "growth_after_warmup": round(warm[-1] - warm[0], 1),
                   "growth_per_hour": round((warm[-1] - warm[0]) / hours, 1) if len(warm) > 1 else 0.0},
        "threads": {"start": threads_start, "end": threading.active_count()},
        "open_files": {"start": files_start, "end": open_files()},
        "utterances": speech.spoken,
        "wav_files": wavs,
        "events": dict(events.counts),
        "narrator": dict(narrator.stats),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if crash or report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
