import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgecap.core.image import DARK_MESSAGE, UNIFORM_MESSAGE, exposure_problem


def edgecap(*args, check=False):
    proc = subprocess.run([sys.executable, "-m", "edgecap", *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    return proc


def test_one_photo_prints_the_caption_alone(tiny_bundle, photo_paths):
    proc = edgecap("caption", photo_paths[0], "--model", tiny_bundle)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0][0].isupper() and lines[0].endswith(".")


def test_several_photos_and_json(tiny_bundle, photo_paths):
    proc = edgecap("caption", *photo_paths[:2], "--model", tiny_bundle, "--beams", "2")
    lines = proc.stdout.strip().splitlines()
    assert [l.split(": ")[0] for l in lines] == [str(p) for p in photo_paths[:2]]
    proc = edgecap("caption", *photo_paths, "--model", tiny_bundle, "--json", "--detail", "detailed")
    records = json.loads(proc.stdout)
    assert [r["path"] for r in records] == [str(p) for p in photo_paths]
    for r in records:
        assert r["caption"] and r["tokens"] and r["ms"] > 0 and r["status"] == "ok"


def test_corrupt_and_missing_files_fail_alone(tiny_bundle, photo_paths, tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(photo_paths[0].read_bytes()[:200])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    proc = edgecap("caption", corrupt, photo_paths[1], empty, tmp_path / "absent.jpg", "--model", tiny_bundle)
    assert proc.returncode == 1
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("edgecap: error: ") for e in errors)
    assert proc.stdout.strip().startswith(f"{photo_paths[1]}: ")


def test_dark_and_blank_images_get_a_statement(tiny_bundle, photos, tmp_path):
    rng = np.random.default_rng(0)
    dark = (photos[0] * 0.03 + rng.normal(0, 2, photos[0].shape)).clip(0, 255).astype(np.uint8)
    gray = np.full((240, 320, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "dark.jpg"), dark)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    assert exposure_problem(photos[0]) is None
    proc = edgecap("caption", tmp_path / "dark.jpg", tmp_path / "gray.png", "--model", tiny_bundle, "--json")
    records = json.loads(proc.stdout)
    assert [r["caption"] for r in records] == [DARK_MESSAGE, UNIFORM_MESSAGE]
    assert [r["tokens"] for r in records] == [[], []]


def test_bad_model_folder_is_one_line(tmp_path, photo_paths):
    proc = edgecap("caption", photo_paths[0], "--model", tmp_path / "missing")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_unknown_provider_is_one_line(tiny_bundle, photo_paths):
    proc = edgecap("caption", photo_paths[0], "--model", tiny_bundle, "--provider", "qnn")
    assert proc.returncode == 2 and "not available" in proc.stderr


def test_bench_reports_stages(tiny_bundle):
    proc = edgecap("bench", "--model", tiny_bundle, "--runs", "3", "--warmup", "1", "--json")
    report = json.loads(proc.stdout)
    assert {"read", "preprocess", "encoder", "decode", "rerank", "total"} <= set(report["stages"])
    assert report["stages"]["total"]["median_ms"] > 0


def test_runtime_imports_without_torch():
    code = ("import sys, builtins; real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('torch', 'transformers', 'onnx'): raise ImportError(name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "import edgecap, edgecap.core.model, edgecap.cli, edgecap.core.decoding, edgecap.evaluation.bench\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr
