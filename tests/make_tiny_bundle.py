"""Write the tiny test bundle that the run-time tests load, as piper commits its test voice.

Random weights (export/tiny.py, seed 0) go through the same export as a real model (SPARC
attention nodes, manifest, hashes), and the bundle gets a caption memory of the four photos
in assets/. Making it needs the build-time extras (torch); the tests that load it do not.
After changing the export or the bundle format, run it again and commit the result:

    python tests/make_tiny_bundle.py                # rewrites tests/data/edgecap-tiny
    python tests/make_tiny_bundle.py --out DIR      # somewhere else

tests/test_tiny_bundle.py fails when the committed bundle is not what this script makes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_BUNDLE = REPO / "tests" / "data" / "edgecap-tiny"
MEMORY_PHOTOS = [REPO / "assets" / f"{name}.jpg" for name in ("chelsea", "coffee", "astronaut", "rocket")]
SEED = 0
MAX_BYTES = 2 * 1024 * 1024


def make_tiny_bundle(out_dir: Path) -> Path:
    """The tiny bundle, written to out_dir (which must not exist yet)."""
    from export.memory import add_memory
    from export.tiny import build_tiny_bundle

    _, path = build_tiny_bundle(Path(out_dir), seed=SEED)
    add_memory(path, MEMORY_PHOTOS, dims=16)
    return path


def bundle_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_BUNDLE, help="bundle folder (replaced)")
    out = parser.parse_args(argv).out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # a failed run leaves the old bundle as it was
        built = make_tiny_bundle(Path(tmp) / out.name)
        size = bundle_bytes(built)
        if size > MAX_BYTES:
            print(f"make_tiny_bundle: {built} is {size} bytes, over the {MAX_BYTES} a test bundle may be",
                  file=sys.stderr)
            return 1
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(built), out)
    print(f"{out}: {size} bytes")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # this checkout's export/ and edgecap/, not another installed copy
    sys.exit(main())
