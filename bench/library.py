"""Throughput of `edgecap describe` over a generated photo library: 1 and 2 workers, and Ray.

    python bench/library.py [--photos 200] [--runs worker1 worker2 ray] [--rounds 1] [--json runs/library.json]

Writes `--photos` synthetic scenes (gradient sky and ground, a few shapes, noise; JPEG, PNG
and WebP; 320-1024 px) plus the four example photos to a temporary folder, then runs
`python -m edgecap describe` on it once per configuration with a fresh JSON Lines file.
For each run it reports: how many photos got the same caption, status and confidence as in
the first run (by content hash); wall time of the whole command; the steady rate (photos/s between
the first and the last record appearing in the file, so model loading and Ray start-up are
left out); CPU time of the command and its children; the peak RSS of one worker as the
summary line gives it. Timings on a shared machine are noisy: repeat, and compare CPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUNS = {"worker1": ["--workers", "1"], "worker2": ["--workers", "2"], "ray": ["--ray", "--workers", "2"]}


def write_generated_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` synthetic scenes, different in content, size and format, the same for a given seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(320, 1025)), int(rng.integers(320, 1025))
        horizon = int(h * rng.uniform(0.3, 0.7))
        sky, ground = rng.integers(40, 255, 3), rng.integers(20, 200, 3)
        image = np.empty((h, w, 3), np.float32)
        fade = np.linspace(0.6, 1.0, horizon)[:, None, None]
        image[:horizon] = sky * fade
        image[horizon:] = ground
        for _ in range(int(rng.integers(1, 6))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                cv2.circle(image, centre, int(rng.integers(10, min(h, w) // 3)), colour, -1)
            else:
                size = rng.integers(10, min(h, w) // 2, 2)
                cv2.rectangle(image, centre, (centre[0] + int(size[0]), centre[1] + int(size[1])), colour, -1)
        image += rng.normal(0, 6, image.shape)
        rgb = np.clip(image, 0, 255).astype(np.uint8)
        path = folder / f"scene-{i:04d}.{('jpg', 'png', 'webp')[i % 3]}"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def run_once(folder: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "edgecap", "describe", str(folder), "--out", str(out), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    seen: list[tuple[float, int]] = []
    while proc.poll() is None:
        time.sleep(0.25)
        lines = sum(1 for _ in open(out, encoding="utf-8")) if out.exists() else 0
        if not seen or lines != seen[-1][1]:
            seen.append((time.perf_counter() - start, lines))
    wall = time.perf_counter() - start
    stderr = proc.stderr.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = [line for line in stderr.splitlines() if " described, " in line]
    rss = re.search(r"peak worker RSS (\d+) MB", stderr)
    first = next(((t, n) for t, n in seen if n > 0), (wall, 0))
    last = seen[-1] if seen else (wall, 0)
    steady = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else None
    return {"command": " ".join(["python", "-m", "edgecap", *cmd[3:]]), "returncode": proc.returncode,
            "wall_s": round(wall, 1), "records": last[1], "photos_per_s": round(last[1] / wall, 3),
            "steady_photos_per_s": round(steady, 3) if steady else None,
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "worker_rss_mb": int(rss.group(1)) if rss else None, "summary": summary[-1] if summary else stderr[-500:]}


def agreement(a: Path, b: Path) -> str:
    """'k/n': photos (by content hash) whose caption, status and confidence are the same in both files."""
    def read(path):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {r["sha256"]: (r.get("caption"), r["status"], r.get("confidence")) for r in rows if "sha256" in r}

    left, right = read(a), read(b)
    return f"{sum(left[k] == right.get(k) for k in left)}/{len(left)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the runs, in reverse order every other round (the load of a shared "
                             "machine drifts); reports each round's ratio to the first run and the medians")
    parser.add_argument("--extra", default="", help="more describe arguments, e.g. '--no-rerank'")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = {"photos": args.photos + 4, "cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()[0],
               "rounds": []}
    with tempfile.TemporaryDirectory(prefix="edgecap-library-") as tmp:
        folder = Path(tmp) / "photos"
        write_generated_photos(folder, args.photos)
        for photo in sorted((REPO / "assets").glob("*.jpg")):
            shutil.copy(photo, folder / photo.name)
        first = Path(tmp) / f"{args.runs[0]}.jsonl"
        for number in range(args.rounds):
            round_ = {}
            for name in (args.runs if number % 2 == 0 else args.runs[::-1]):
                out = Path(tmp) / f"{name}.jsonl"
                out.unlink(missing_ok=True)
                round_[name] = run_once(folder, out, RUNS[name] + args.extra.split())
                print(number, name, json.dumps(round_[name]), file=sys.stderr, flush=True)
            for name in args.runs:
                round_[name]["same_captions_as_" + args.runs[0]] = agreement(first, Path(tmp) / f"{name}.jsonl")
                round_[name]["ratio_to_" + args.runs[0]] = round(
                    round_[name]["photos_per_s"] / round_[args.runs[0]]["photos_per_s"], 3)
            results["rounds"].append(round_)
            if args.json:  # after every round: a long benchmark that is stopped keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=2) + "\n")
    results["load_after"] = os.getloadavg()[0]
    for key in ("photos_per_s", "cpu_s", "ratio_to_" + args.runs[0]):
        results["median_" + key] = {name: statistics.median(r[name][key] for r in results["rounds"])
                                    for name in args.runs}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
