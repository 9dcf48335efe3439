"""Captions per second per stream when one `edgecap narrate` serves 1, 2, 4 ... sources.

    python bench/multistream.py [--streams 1 2 4] [--photos 8] [--data ../shared/data]

Each stream is a slideshow of its own photos (val photos from the shared data when present,
else the four in assets/, linked into a temporary folder), played as fast as the narrator
can go: --seconds-per-image 2 at 5 frames a second, so 10 frames per photo pass the scene
gate and each photo is described once. Speech is off (printing only). The clock runs from
each stream's start event to its end event (model loading excluded). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def photo_pool(data: Path, count: int) -> list[Path]:
    captions = data / "captioned" / "captions.jsonl"
    if captions.is_file():
        val = [json.loads(line)["file"] for line in captions.read_text().splitlines() if '"split": "val"' in line]
        return [data / "captioned" / f for f in sorted(val)[:count]]
    assets = sorted((REPO / "assets").glob("*.jpg"))
    return [assets[i % len(assets)] for i in range(count)]


def run(n: int, photos_per_stream: int, data: Path, threads: int | None) -> dict:
    pool = photo_pool(data, n * photos_per_stream)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "edgecap", "narrate", "--speech", "none", "--quiet", "--no-keyboard",
                "--seconds-per-image", "2", "--slideshow-fps", "5", "--provider", "cpu",
                "--log-json", f"{tmp}/log.jsonl"]
        if threads:
            args += ["--threads", str(threads)]
        for s in range(n):
            folder = Path(tmp) / f"s{s}"
            folder.mkdir()
            for i, photo in enumerate(pool[s * photos_per_stream:(s + 1) * photos_per_stream]):
                (folder / f"{i:03d}{photo.suffix}").symlink_to(photo.resolve())  # a relative --data too
            args += ["--images", str(folder)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(args, cwd=REPO, check=True, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        streams = []
        for s in range(n):
            log = Path(tmp) / (f"log.cam{s + 1}.jsonl" if n > 1 else "log.jsonl")
            events = [json.loads(line) for line in log.read_text().splitlines()]
            began = next(e["wall"] for e in events if e["kind"] == "start")
            ended = next(e["wall"] for e in events if e["kind"] == "end")
            captions = [e for e in events if e["kind"] == "caption"]
            frames = next(e.get("frames_analysed", 0) for e in events if e["kind"] == "end")
            seconds = ended - began
            streams.append({"captions": len(captions), "frames": frames, "seconds": round(seconds, 2),
                            "captions_per_s": round(len(captions) / seconds, 3),
                            "frames_per_s": round(frames / seconds, 2),
                            "caption_ms_median": round(statistics.median(c["ms"] for c in captions), 1)})
    per_stream = [s["captions_per_s"] for s in streams]
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    # CPU seconds per caption (model loading included) are steadier than wall clock on a
    # shared machine: the load average at the start is reported next to them.
    return {"streams": n, "captions_per_s_per_stream_median": round(statistics.median(per_stream), 3),
            "captions_per_s_total": round(sum(per_stream), 3), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "cpu_s_per_caption": round(cpu / max(1, sum(s["captions"] for s in streams)), 3),
            "load_average_before": round(load, 1), "per_stream": streams}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--photos", type=int, default=8, help="photos per stream")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    results = [run(n, args.photos, args.data, args.threads) for n in args.streams]
    print(json.dumps({"cores": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
