"""Feed `edgecap caption` hundreds of mutated images and count what goes wrong.

    python bench/fuzz.py                     # 320 mutated files, 40 per command
    python bench/fuzz.py --n 600 --json fuzz.json

Every command captions a batch with a good photo first and last, as one process, the way a
user would run it. The mutations are what a probe found dangerous: flipped, zeroed and cut
bytes in every format edgecap reads, headers declaring gigapixels, decompression bombs,
transparent PNGs, a sparse 4 GiB file, FIFOs, devices, folders and junk. Printed figures
(the issue's targets): tracebacks, hangs > 10 s, peak RSS per command (<= 400 MB), good
photos captioned, and every file reported once.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
HANG_SECONDS = 10.0
RSS_TARGET_MB = 400


def png_chunks(width: int, height: int, idat: bytes, colour: int = 2, depth: int = 8) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def zero_png(width: int, height: int) -> bytes:
    """A valid PNG of one grey value: a few hundred KB that decode to width*height*3 bytes."""
    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x5a" * (width * 3)
    parts = [comp.compress(row) for _ in range(height)]
    return png_chunks(width, height, b"".join(parts) + comp.flush())


def seeds() -> dict[str, bytes]:
    """Good encodings of the example photos in every format edgecap reads."""
    out = {}
    for path in sorted(ASSETS.glob("*.jpg")):
        out[path.name] = path.read_bytes()
        bgr = cv2.imread(str(path))
        for ext in (".png", ".webp", ".bmp", ".tiff"):
            ok, buf = cv2.imencode(ext, bgr)
            if ok:
                out[path.stem + ext] = buf.tobytes()
    return out


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    start = min(len(b) - 1, 64)
    if kind == "flip":
        for i in rng.integers(start, len(b), int(rng.integers(1, 20))):
            b[i] ^= int(rng.integers(1, 256))
    elif kind == "zero":
        i = int(rng.integers(start, len(b)))
        size = len(b[i:i + int(rng.integers(16, 4096))])
        b[i:i + size] = bytes(size)
    elif kind == "cut":
        b = b[:int(rng.integers(1, len(b)))]
    elif kind == "splice":
        i, j = sorted(int(x) for x in rng.integers(start, len(b), 2))
        b = b[:j] + b[i:j] + b[j:]
    elif kind == "header":
        b[:start] = bytes(int(x) for x in rng.integers(0, 256, start))
    return bytes(b)


def header_dims(data: bytes, name: str, width: int, height: int) -> bytes:
    if name.endswith(".jpg"):
        i = data.index(b"\xff\xc0") if b"\xff\xc0" in data else data.index(b"\xff\xc2")
        return data[:i + 5] + struct.pack(">HH", height, width) + data[i + 9:]
    if name.endswith(".png"):
        return data[:16] + struct.pack(">II", width, height) + data[24:]
    if name.endswith(".bmp"):
        return data[:18] + struct.pack("<ii", width, height) + data[26:]
    return data


def build_cases(folder: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """(path, kind) for n mutated inputs written into folder."""
    rng = np.random.default_rng(seed)
    good = seeds()
    names = sorted(good)
    cases: list[tuple[str, str]] = []

    def add(kind: str, name: str, data: bytes | None = None) -> Path:
        path = folder / f"{len(cases):04d}-{kind}-{name}"
        if data is not None:
            path.write_bytes(data)
        cases.append((str(path), kind))
        return path

    # The probe's special cases, once each (several for the costly bombs).
    add("bomb-png-50k", "x.png", png_chunks(50_000, 50_000, zlib.compress(bytes(100_000))))
    add("bomb-png-16bit-alpha", "x.png", png_chunks(4000, 4000, zlib.compress(bytes(1000)), colour=6, depth=16))
    add("bomb-jpeg-65k", "x.jpg", header_dims(good["coffee.jpg"], "x.jpg", 65_000, 65_000))
    big = zero_png(6300, 6300)  # 39.7 MP, just under the limit: decodes, shrinks, is called blank
    for i in range(3):
        add("bomb-png-40mp", f"{i}.png", big)
    add("bomb-png-1gp", "x.png", png_chunks(32_768, 32_768, zlib.compress(bytes(1 << 20))))
    with open(add("sparse-4gib", "x.jpg", good["coffee.jpg"]), "r+b") as f:
        f.truncate(4 << 30)
    for i in range(2):
        os.mkfifo(add("fifo", f"{i}.jpg"))
    add("folder", "x.jpg").mkdir()
    os.symlink("/dev/zero", add("device", "x.jpg"))
    add("empty", "x.png", b"")
    add("random", "x.jpg", bytes(int(x) for x in rng.integers(0, 256, 4096)))
    add("text", "x.png", b"not an image at all\n" * 50)
    rgba = np.dstack([cv2.imread(str(ASSETS / "rocket.jpg")), np.zeros((427, 640), np.uint8)])
    add("transparent", "x.png", cv2.imencode(".png", rgba)[1].tobytes())
    for name in ("chelsea.jpg", "coffee.png", "rocket.bmp"):
        for dims in ((20_000, 20_000), (0, 0), (1, 65_000)):
            add("dims", name, header_dims(good[name], name, *dims))
    kinds = ("flip", "flip", "zero", "cut", "splice", "header")
    while len(cases) < n:
        name = names[int(rng.integers(len(names)))]
        kind = kinds[int(rng.integers(len(kinds)))]
        add(kind, name, mutate(good[name], kind, rng))
    return cases


def run_batch(paths: list[str], model: str | None, limit: float) -> dict:
    cmd = [sys.executable, "-m", "edgecap", "caption", "--json", *paths]
    if model:
        cmd += ["--model", model]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO)
        killer = threading.Timer(limit, proc.kill)
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    try:
        records = json.loads(stdout)
    except ValueError:
        records = []
    return {"rc": proc.returncode, "seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "records": records,
            "stderr": stderr, "killed": proc.returncode in (-9, 137)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=320, help="mutated files (>= 300 for the issue's target)")
    p.add_argument("--batch", type=int, default=40, help="mutated files per command")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None)
    p.add_argument("--limit", type=float, default=600.0, help="seconds before a command counts as hung")
    p.add_argument("--json", type=Path, help="write the figures and every bad outcome here")
    args = p.parse_args(argv)

    goods = [str(ASSETS / "coffee.jpg"), str(ASSETS / "chelsea.jpg")]
    figures = Counter()
    statuses: Counter[str] = Counter()
    problems: list[dict] = []
    peak_rss, slowest = 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="edgecap-fuzz-") as tmp:
        cases = build_cases(Path(tmp), args.n, args.seed)
        kind_of = dict(cases)
        for i in range(0, len(cases), args.batch):
            chunk = [path for path, _ in cases[i:i + args.batch]]
            result = run_batch([goods[0], *chunk, goods[1]], args.model, args.limit)
            figures["commands"] += 1
            peak_rss = max(peak_rss, result["rss_mb"])
            records = result["records"]
            tracebacks = result["stderr"].count("Traceback")
            figures["tracebacks"] += tracebacks
            figures["hung_commands"] += result["killed"]
            if len(records) != len(chunk) + 2:
                figures["commands_missing_records"] += 1
                problems.append({"batch": i, "rc": result["rc"], "stderr": result["stderr"][-2000:]})
            for path, record in zip([goods[0], *chunk, goods[1]], records):
                slowest = max(slowest, record["ms"] / 1000)
                figures["hangs_over_10s"] += record["ms"] / 1000 > HANG_SECONDS
                if path in goods:
                    figures["good_photos"] += 1
                    figures["good_photos_captioned"] += record["status"] == "ok" and bool(record["caption"])
                    continue
                statuses[record["status"]] += 1
                if record["status"] == "error" and "\n" in record.get("message", ""):
                    figures["multi_line_errors"] += 1
                if record["status"] == "ok":
                    problems.append({"kind": kind_of[path], "path": Path(path).name, "caption": record["caption"]})
            other = [ln for ln in result["stderr"].splitlines()
                     if ln and not ln.startswith("edgecap: ")]
            figures["stray_stderr_lines"] += len(other)
            if tracebacks or other:
                problems.append({"batch": i, "stderr": "\n".join(other)[-2000:]})
            print(f"batch {i // args.batch + 1}: {len(chunk)} files, rc {result['rc']}, {result['seconds']:.1f} s, "
                  f"peak RSS {result['rss_mb']:.0f} MB", flush=True)
    report = {
        "mutated_files": len(cases), "commands": figures["commands"],
        "tracebacks": figures["tracebacks"], "hung_commands": figures["hung_commands"],
        "hangs_over_10s": figures["hangs_over_10s"], "slowest_file_s": round(slowest, 2),
        "peak_rss_mb": round(peak_rss, 1), "rss_target_mb": RSS_TARGET_MB,
        "good_photos_captioned": f"{figures['good_photos_captioned']}/{figures['good_photos']}",
        "commands_missing_records": figures["commands_missing_records"],
        "multi_line_errors": figures["multi_line_errors"], "stray_stderr_lines": figures["stray_stderr_lines"],
        "mutated_status": dict(statuses),
        "mutated_captioned_ok": statuses["ok"],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**report, "problems": problems}, indent=2))
    met = (report["tracebacks"] == 0 and report["hangs_over_10s"] == 0 and report["hung_commands"] == 0
           and peak_rss <= RSS_TARGET_MB and figures["good_photos_captioned"] == figures["good_photos"]
           and report["commands_missing_records"] == 0)
    print("targets met" if met else "targets MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
