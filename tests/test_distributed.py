"""The Ray Data path gives the same records as the worker processes, on a local Ray (`ray.init(num_cpus=2)`)."""
from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from edgecap.library.describe import DescribeOptions, describe_library

ray = pytest.importorskip("ray")

from edgecap.library.distributed import describe_on_ray  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"

KEYS = ("sha256", "caption", "status", "confidence", "objects", "faces", "error", "model")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def generated_photos(folder: Path, count: int) -> list[Path]:
    spec = importlib.util.spec_from_file_location("bench_library", REPO / "bench" / "library.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_generated_photos(folder, count)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_name(path: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: {k: r.get(k) for k in KEYS} for r in records(path)}


def test_ray_and_worker_processes_say_the_same(local_ray, tmp_path):
    folder = tmp_path / "photos"
    generated_photos(folder, 2)
    for photo in ASSETS.glob("*.jpg"):
        shutil.copy(photo, folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    options = DescribeOptions(provider="cpu", threads=1, sidecar="txt")  # the default decoding, reranker on

    local = describe_library(folder, tmp_path / "local.jsonl", replace(options, sidecar="none"))
    on_ray = describe_on_ray(folder, tmp_path / "ray.jsonl", options, concurrency=2, batch_size=3)
    assert (local.described, local.failed) == (on_ray.described, on_ray.failed) == (6, 1)
    assert by_name(tmp_path / "local.jsonl") == by_name(tmp_path / "ray.jsonl")
    assert 0 < on_ray.worker_rss_mb
    rocket = by_name(tmp_path / "ray.jsonl")["rocket.jpg"]["caption"]
    assert (folder / "rocket.jpg.txt").read_text().strip() == rocket

    # Again, given as a URI (the s3:// code path: Ray lists the files): nothing is described twice.
    again = describe_on_ray(f"local://{folder}", tmp_path / "ray.jsonl", options, concurrency=1, batch_size=8)
    assert (again.described, again.resumed) == (0, 6)
    assert len(records(tmp_path / "ray.jsonl")) == 8  # one more line: the broken file, tried again
    assert json.loads((tmp_path / "ray.jsonl").read_text().splitlines()[-1])["status"] == "failed"
