"""`edgecap narrate` end to end: a synthetic camera video with faults, spoken to WAV files."""
import json
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgecap.audio.repeats import near_duplicate
from edgecap.audio.speech import SpeechWorker
from edgecap.audio.voices import ProcessVoice, TextVoice, espeak_binary
from edgecap.core.decoding import preset
from edgecap.core.image import read_image
from edgecap.narration.frames import Frame, FrameSource, Paced, VideoSource
from edgecap.narration.narrate import CUES, EventLog, NarrateOptions, Narrator
from edgecap.narration.scene import SceneOptions, cosine_distance

from camera_faults import Faults, FaultySource  # tests/camera_faults.py

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "captioned" / "images"
REAL_MODEL = REPO / "models" / "edgecap-base"
FPS = 10
SIZE = (320, 240)
# The random tiny test encoder puts every photo within ~0.2 cosine distance of every other;
# jitter, noise and MJPG move a photo's features by < 0.0015. 0.01 sits well between.
TINY_SEMANTIC_THRESHOLD = 0.01


# --- the model and the test video --------------------------------------------------------------
@pytest.fixture(scope="module")
def model(request):
    """(captioner, semantic threshold): the shipped model when installed, else the tiny one."""
    from edgecap.core.model import OnnxCaptioner

    if (REAL_MODEL / "manifest.json").is_file():
        return OnnxCaptioner.load(REAL_MODEL, provider="cpu"), SceneOptions.semantic_threshold
    return request.getfixturevalue("tiny_captioner"), TINY_SEMANTIC_THRESHOLD


def fit(rgb):
    return cv2.resize(rgb, SIZE, interpolation=cv2.INTER_AREA)


def pick_scenes(captioner, threshold, n=6):
    """n photos, each far enough from the one before in the encoder's eyes (3x the threshold,
    but at most 0.6: different photos are a median 0.74 apart for the trained encoder) that
    every cut in the video is a real scene change for this model."""
    margin = min(3 * threshold, 0.6)
    paths = sorted(PHOTOS.glob("*.jpg"))[::97][:60] if PHOTOS.is_dir() else []
    if len(paths) < n:
        paths = sorted((REPO / "assets").glob("*.jpg"))
    chosen, last = [], None
    for path in paths:
        still = fit(read_image(path))
        pooled = captioner.encode([still]).pooled[0]
        if last is None or cosine_distance(pooled, last) >= margin:
            chosen.append(still)
            last = pooled
        if len(chosen) == n:
            break
    return chosen


def shaky(still, rng):
    """A hand-held camera: a pixel of shake and a little sensor noise in every frame."""
    dx, dy = rng.integers(-1, 2, size=2)
    moved = cv2.warpAffine(still, np.float32([[1, 0, dx], [0, 1, dy]]), SIZE, borderMode=cv2.BORDER_REFLECT)
    return np.clip(moved + rng.normal(0, 2.0, moved.shape), 0, 255).astype(np.uint8)


@dataclass
class TestVideo:
    path: Path
    scenes: int
    stretches: dict = field(default_factory=dict)  # name -> (start, end) seconds


def build_video(path, stills, seed=0) -> TestVideo:
    """Distinct scenes joined by 1 s cross-fades, with a person walking through (scene 1), a
    dark stretch (hand over the lens, after scene 2), a frozen stretch (scene 4, or 3 when
    there are only four) and a stretch left for a camera drop (the last scene)."""
    assert len(stills) >= 4
    rng = np.random.default_rng(seed)
    frames, stretches = [], {}
    frozen_at, drop_at = max(3, len(stills) - 2), len(stills) - 1

    def hold(still, seconds):
        frames.extend(shaky(still, rng) for _ in range(round(seconds * FPS)))

    def fade(a, b):
        frames.extend(cv2.addWeighted(a, 1 - k / 10, b, k / 10, 0) for k in range(1, 10))

    def mark(name, seconds):
        start = len(frames) / FPS
        stretches[name] = (start, start + seconds)

    for i, still in enumerate(stills):
        if i and i != 3:  # scene 3 comes straight out of the dark stretch
            fade(stills[i - 1], still)
        hold(still, 3.0)
        if i == 1:
            mark("walker", 1.1)
            for x in range(-120, 330, 40):
                frame = shaky(still, rng)
                cv2.ellipse(frame, (x, 130), (60, 110), 0, 0, 360, (40, 35, 30), -1)
                frames.append(frame)
            hold(still, 1.5)
        if i == 2:
            mark("dark", 2.0)
            frames.extend(np.clip(shaky(still, rng) * 0.03 + rng.normal(0, 2, (240, 320, 3)), 0, 255)
                          .astype(np.uint8) for _ in range(20))
        if i == frozen_at:
            mark("frozen", 3.0)
            frames.extend([frames[-1]] * 30)
        if i == drop_at:
            mark("drop", 3.0)
            hold(still, 3.0)
            hold(still, 3.0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return TestVideo(path, len(stills), stretches)


@pytest.fixture(scope="module")
def video(model, tmp_path_factory):
    captioner, threshold = model
    stills = pick_scenes(captioner, threshold)
    if len(stills) < 4:
        pytest.skip(f"found only {len(stills)} photos this model tells apart (../shared/data absent?)")
    return build_video(tmp_path_factory.mktemp("video") / "scenes.avi", stills)


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def narrate(source, captioner, threshold, speech, log_path, **options):
    events = EventLog(log_path)
    speech.on_event = events
    narrator = Narrator(source, captioner, preset("brief"), speech, events,
                        SceneOptions(semantic_threshold=threshold), NarrateOptions(**options))
    narrator.run()
    speech.drain(60)
    speech.close()
    events.close()
    return narrator, read_log(log_path)


def utterances(records):
    return [r for r in records if r["kind"] == "speech" and r["state"] == "start"]


# --- the main scenario --------------------------------------------------------------------------
def test_narrating_a_camera_video_with_faults(model, video, tmp_path):
    captioner, threshold = model
    drop = video.stretches["drop"]
    source = FaultySource(VideoSource(video.path), Faults(drops=(drop,), corrupt=((16.0, 16.3),)))
    engine = ProcessVoice("espeak") if espeak_binary() else TextVoice()
    speech = SpeechWorker(engine, replace_pending=False, wav_dir=tmp_path / "wav")
    start = time.monotonic()
    narrator, records = narrate(source, captioner, threshold, speech, tmp_path / "log.jsonl")
    assert time.monotonic() - start < 60

    captions = [r for r in records if r["kind"] == "caption"]
    cues = [(r["cue"], r["t"]) for r in records if r["kind"] == "cue"]
    spoken = [r for r in captions if r["speech"] == "queued"]
    # Every distinct scene is announced exactly once: the walker, the frozen stretch, the dark
    # stretch and the drop add nothing. Spoken captions may fall short only by captions that
    # really are repeats of the utterance before them (the random test model has 30 words).
    assert len(captions) == video.scenes, [(r["t"], r["text"]) for r in captions]
    suppressed = [r for r in captions if r["speech"] == "suppressed"]
    assert len(spoken) + len(suppressed) == len(captions) and len(suppressed) <= 2
    said = utterances(records)
    for before, after in zip(said, said[1:]):
        assert not near_duplicate(before["text"], after["text"]), (before["text"], after["text"])
    for r in suppressed:
        previous = [u for u in said if u["wall"] <= r["wall"] and u["said"] == "caption"][-1]
        assert near_duplicate(previous["text"], r["text"])

    walker, frozen, dark = video.stretches["walker"], video.stretches["frozen"], video.stretches["dark"]
    assert not [r for r in captions if walker[0] <= r["t"] <= walker[1] + 1.5]
    assert not [r for r in captions if frozen[0] <= r["t"] <= frozen[1]]
    assert [c for c, _ in cues] == ["ready", "dark", "camera_lost", "camera_back"]
    t_dark, t_lost, t_back = (t for _, t in cues[1:])
    assert dark[0] + 0.4 <= t_dark <= dark[0] + 0.8
    assert drop[0] + 1.4 <= t_lost <= drop[0] + 1.7 and drop[1] <= t_back <= drop[1] + 0.2
    assert not [r for r in captions if drop[0] <= r["t"]]  # the same scene came back: nothing new
    assert narrator.stats["frames_corrupt"] == 3 and narrator.stats["errors"] == 0
    assert [r["text"] for r in records if r["kind"] == "fault"] == ["corrupt frame skipped"]
    assert all({"t", "wall", "kind", "text"} <= r.keys() for r in records)

    if isinstance(engine, TextVoice):
        pytest.skip("espeak-ng not installed: WAV checks skipped")
    wavs = sorted((tmp_path / "wav").glob("*.wav"))
    assert [Path(u["wav"]) for u in said] == wavs
    assert len(wavs) == len(spoken) + len(cues)
    for path in wavs:
        with wave.open(str(path)) as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
            seconds = w.getnframes() / w.getframerate()
        assert seconds > 0.2 and np.sqrt(np.mean(samples ** 2)) > 300, path


class RecordingSource(FrameSource):
    """Notes the wall-clock time of every frame read."""

    def __init__(self, inner):
        self.inner, self.name, self.fps, self.live = inner, inner.name, inner.fps, inner.live
        self.reads = []

    def read(self):
        frame = self.inner.read()
        self.reads.append(time.monotonic())
        return frame


class SlowVoice:
    name = "slow"
    writes_wav = False

    def start(self, text, rate, wav=None):
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.2)"])


def test_capture_never_stalls_while_speech_plays(model, video, tmp_path):
    captioner, threshold = model
    source = RecordingSource(Paced(VideoSource(video.path)))
    speech = SpeechWorker(SlowVoice(), replace_pending=True)
    _, records = narrate(source, captioner, threshold, speech, tmp_path / "log.jsonl", duration=12.0)
    starts = {r["utterance"]: r["wall"] for r in records if r.get("state") == "start"}
    ends = {r["utterance"]: r["wall"] for r in records if r.get("state") == "done"}
    wall_offset = time.time() - time.monotonic()
    reads = np.asarray(source.reads) + wall_offset
    spans = [(starts[u], ends[u]) for u in ends if ends[u] - starts[u] > 1.0 and ends[u] < reads[-1]]
    assert len(spans) >= 2
    for begin, end in spans:
        during = reads[(reads >= begin) & (reads <= end)]
        assert len(during) >= 10  # 10 fps for 1.2 s
        assert np.diff(during).max() < 0.3


# --- the semantic repeat filter with controlled captions ----------------------------------------
class ScriptedCaptioner:
    """The real encoder (for the scene detector) with captions read from a script."""

    def __init__(self, real, captions):
        self.real, self.captions, self.provider = real, list(captions), "CPUExecutionProvider"

    def encode(self, images):
        return self.real.encode(images)

    def caption_features(self, features, options):
        return [SimpleNamespace(caption=self.captions.pop(0), ms=1.0)]


def test_captions_that_say_the_same_thing_are_not_repeated(model, video, tmp_path):
    captioner, threshold = model
    script = ["A dog sitting on a couch.", "A dog sits on the sofa.", "A red bus on a city street.",
              "A man riding a bike down a street.", "A man riding a horse down a street.",
              "Two red buses on a city street."]
    scripted = ScriptedCaptioner(captioner, script[:video.scenes])
    _, records = narrate(VideoSource(video.path), scripted, threshold, SpeechWorker(TextVoice(), replace_pending=False),
                         tmp_path / "log.jsonl")
    said = [r["text"] for r in utterances(records) if r["said"] == "caption"]
    expected = [s for i, s in enumerate(script[:video.scenes]) if i != 1]
    assert said == expected


class FlakyGpuCaptioner(ScriptedCaptioner):
    def __init__(self, real):
        super().__init__(real, [f"Scene number {i} with thing{i}." for i in range(20)])
        self.provider = "CUDAExecutionProvider"

    def encode(self, images):
        if self.provider != "CPUExecutionProvider":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.real.encode(images)

    def fall_back_to_cpu(self):
        self.provider = "CPUExecutionProvider"


def test_a_provider_failure_is_announced_and_narration_goes_on_on_the_cpu(model, video, tmp_path):
    captioner, threshold = model
    flaky = FlakyGpuCaptioner(captioner)
    _, records = narrate(VideoSource(video.path), flaky, threshold, SpeechWorker(TextVoice(), replace_pending=False),
                         tmp_path / "log.jsonl")
    assert [r["cue"] for r in records if r["kind"] == "cue"][:2] == ["ready", "cpu"]
    assert sum(r["kind"] == "caption" for r in records) == video.scenes
    assert any("falling back to the CPU" in r["text"] for r in records if r["kind"] == "fault")


class UnpluggedCamera(FrameSource):
    """A live camera that stops delivering between `gone` and `back` seconds and must be reopened."""
    live = True

    def __init__(self, still, gone=0.6, back=2.0):
        self.still, self.gone, self.back = still, gone, back
        self.start, self.reopens, self.count = time.monotonic(), 0, 0

    def read(self):
        time.sleep(0.05)
        t = time.monotonic() - self.start
        self.count += 1
        if self.gone <= t < self.back or (t >= self.back and self.reopens == 0):
            return Frame(None, t, self.count, problem="missing")
        return Frame(self.still, t, self.count)

    def reopen(self):
        self.reopens += 1
        return True


def test_an_unplugged_camera_is_reported_retried_with_back_off_and_welcomed_back(model, video, tmp_path):
    captioner, threshold = model
    still = fit(read_image(REPO / "assets" / "coffee.jpg"))
    camera = UnpluggedCamera(still)
    _, records = narrate(camera, captioner, threshold, SpeechWorker(TextVoice()), tmp_path / "log.jsonl",
                         duration=3.2, lost_after=0.5, retry_first=0.2)
    cues = [(r["cue"], r["t"]) for r in records if r["kind"] == "cue"]
    assert [c for c, _ in cues] == ["ready", "camera_lost", "camera_back"]
    assert cues[1][1] == pytest.approx(1.1, abs=0.2) and cues[2][1] >= 2.0
    assert 2 <= camera.reopens <= 4  # 0.2, 0.4, 0.8 s apart
    assert sum(r["kind"] == "caption" for r in records) == 1


def test_a_camera_that_never_delivers_is_announced_once_and_duration_still_ends_it(tmp_path):
    camera = UnpluggedCamera(None, gone=0.0, back=1e9)
    start = time.monotonic()
    _, records = narrate(camera, None, 0.3, SpeechWorker(TextVoice()), tmp_path / "log.jsonl",
                         duration=2.0, lost_after=0.5, retry_first=0.2, retry_max=0.4)
    assert time.monotonic() - start < 5
    assert [r["cue"] for r in records if r["kind"] == "cue"] == ["ready", "camera_lost"]
    assert camera.reopens >= 2 and records[-1]["kind"] == "end" and records[-1]["t"] >= 2.0


# --- the command line ------------------------------------------------------------------------------
def edgecap(*args, **kw):
    return subprocess.run([sys.executable, "-m", "edgecap", *map(str, args)], capture_output=True, text=True,
                          timeout=120, **kw)


def test_cli_narrates_a_video_to_a_json_log(tiny_bundle, video, tmp_path):
    log = tmp_path / "log.jsonl"
    proc = edgecap("narrate", "--video", video.path, "--model", tiny_bundle, "--speech", "none", "--log-json", log,
                   "--scene-threshold", TINY_SEMANTIC_THRESHOLD, "--duration", 10)
    assert proc.returncode == 0, proc.stderr
    records = read_log(log)
    captions = [r["text"] for r in records if r["kind"] == "caption"]
    assert len(captions) >= 2 and records[0]["kind"] == "start" and records[-1]["kind"] == "end"
    assert proc.stdout.splitlines() == [CUES["ready"], *captions]
    proc = edgecap("narrate", "--video", tmp_path / "absent.avi", "--model", tiny_bundle, "--speech", "none")
    assert proc.returncode == 2 and "no such video" in proc.stderr
    # Bad set-ups get one line on stderr and exit status 2, not a traceback.
    for bad, message in ((["--camera", 987], "camera 987 cannot be opened"),
                         (["--video", video.path, "--log-json", tmp_path / "no" / "dir.jsonl"], "No such file"),
                         (["--video", video.path, "--control-socket", video.path], "not a socket")):
        proc = edgecap("narrate", *bad, "--model", tiny_bundle, "--speech", "none", "--duration", 1)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
