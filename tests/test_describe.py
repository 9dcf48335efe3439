"""`edgecap describe DIR`: records, sidecars, resume by content hash, a kill mid-run, bad files."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecap.core.decoding import preset
from edgecap.library.describe import RESULT_FIELDS, BatchDescriber, DescribeOptions, describe_library, plan_workers
from edgecap.library.library_photos import decode_photo, find_photos, jpeg_size
from edgecap.library.sidecars import read_description, write_sidecar

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
FAST = DescribeOptions(provider="cpu", threads=1, decoding=preset("brief", rerank=False))


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_library", REPO / "bench" / "library.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated_photos(folder: Path, count: int) -> list[Path]:
    return _load_bench().write_generated_photos(folder, count)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture()
def library(tmp_path) -> Path:
    """The four example photos, a corrupt JPEG, a text file and a hidden folder."""
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    for photo in sorted(ASSETS.glob("*.jpg")):
        shutil.copy(photo, folder / ("trip" if photo.stem == "rocket" else ".") / photo.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.doc").write_text("not a photo")
    (folder / ".thumbnails").mkdir()
    shutil.copy(ASSETS / "coffee.jpg", folder / ".thumbnails" / "coffee.jpg")
    return folder


def test_find_photos_walks_and_counts_the_rest(library):
    photos, skipped = find_photos(library)
    assert [p.name for p in photos] == ["astronaut.jpg", "broken.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    assert sum(skipped.values()) == 1  # notes.doc; hidden folders are not walked


def test_describe_writes_records_and_xmp_and_resumes(library, tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    options = replace(FAST, sidecar="xmp")
    summary = describe_library(library, out, options)
    assert (summary.described, summary.failed, summary.skipped) == (4, 1, 1)
    assert "broken.jpg" in capsys.readouterr().err  # the bad file is named, the others are done
    written = {Path(r["path"]).name: r for r in records(out)}
    assert written["broken.jpg"]["status"] == "failed"
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        record = written[name]
        assert record["status"] == "ok" and record["caption"].endswith(".")
        assert len(record["sha256"]) == 64
        assert read_description(record["path"] + ".xmp") == record["caption"]
    if shutil.which("exiftool"):
        shown = subprocess.run(["exiftool", "-s3", "-XMP-dc:Description", str(library / "trip" / "rocket.jpg.xmp")],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert shown == written["rocket.jpg"]["caption"]

    # Re-run: nothing described again; a renamed photo reuses its words and gets its own sidecar.
    (library / "chelsea.jpg").rename(library / "cat.jpg")
    again = describe_library(library, out, options)
    assert (again.described, again.resumed, again.failed) == (0, 4, 1)
    renamed = [r for r in records(out) if r["path"].endswith("cat.jpg")]
    assert len(renamed) == 1 and renamed[0]["caption"] == written["chelsea.jpg"]["caption"]
    assert read_description(library / "cat.jpg.xmp") == written["chelsea.jpg"]["caption"]


def test_records_carry_every_field_of_the_caption_result(photos):
    describer = BatchDescriber(FAST)
    data = (ASSETS / "coffee.jpg").read_bytes()
    record = describer.describe([("coffee.jpg", data)])[0]
    if importlib.util.find_spec("edgecap.caption") is None:
        result = describer.captioner.caption([photos[1]], FAST.decoding)[0]
    else:  # the grounded decision (issue 10): what `edgecap caption` says
        from edgecap.caption import describer_for

        result = describer_for(describer.captioner).describe([photos[1]], FAST.decoding)[0]
    assert record["caption"] == result.caption and record["status"] == result.status
    for name in RESULT_FIELDS:  # confidence, objects, faces once the grounded captioner is merged
        assert (name in record) == (getattr(result, name, None) is not None)
        if name in record:
            assert json.dumps(record[name])  # JSON-ready


def test_read_text_needs_the_reader(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(ASSETS / "coffee.jpg", folder)
    proc = subprocess.run([sys.executable, "-m", "edgecap", "describe", str(folder), "--read-text", "--no-rerank",
                           "--out", str(tmp_path / "t.jsonl")], cwd=REPO, capture_output=True, text=True)
    if importlib.util.find_spec("edgecap.vision.reading") is None:
        assert proc.returncode != 0
        assert "edgecap.vision.reading" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    else:
        assert proc.returncode == 0, proc.stderr
        assert "text" in records(tmp_path / "t.jsonl")[0]


def test_resume_after_kill_redescribes_nothing_written(tmp_path):
    folder = tmp_path / "photos"
    generated_photos(folder, 10)
    out = tmp_path / "d.jsonl"
    cmd = [sys.executable, "-m", "edgecap", "describe", str(folder), "--out", str(out), "--batch-size", "1",
           "--no-rerank", "--provider", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = records(out)
    assert 3 <= len(before) < 10, "the run should have been killed part way"
    with open(out, "a") as f:
        f.write('{"path": "half a record')  # as if the kill had cut a write short

    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    after = [json.loads(line) for line in lines[len(before) + 1:]]
    assert {r["sha256"] for r in before}.isdisjoint(r["sha256"] for r in after)
    assert len(before) + len(after) == 10
    assert f"{len(after)} described, {len(before)} already done" in proc.stderr


def test_xmp_update_keeps_what_else_the_sidecar_holds(tmp_path):
    photo = tmp_path / "IMG_1.jpg"
    shutil.copy(ASSETS / "rocket.jpg", photo)
    (tmp_path / "IMG_1.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:darktable="http://darktable.sf.net/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" darktable:history_end="3" xmp:Rating="4">'
        '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">old words</rdf:li></rdf:Alt></dc:description>'
        '<dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>')
    path = write_sidecar(photo, "xmp", "A rocket on a launch pad.")
    text = path.read_text()
    assert read_description(path) == "A rocket on a launch pad." and "old words" not in text
    assert 'darktable:history_end="3"' in text and 'xmp:Rating="4"' in text and "holiday" in text
    if shutil.which("exiftool"):
        shown = subprocess.run(["exiftool", "-s3", "-XMP-dc:Description", "-XMP-xmp:Rating", str(path)],
                               capture_output=True, text=True, check=True).stdout.split("\n")
        assert shown[:2] == ["A rocket on a launch pad.", "4"]


def test_heic_is_described_with_pillow_heif_or_skipped_with_a_count(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    if importlib.util.find_spec("pillow_heif") is None:
        shutil.copy(ASSETS / "chelsea.jpg", folder / "IMG_0001.HEIC")
        photos, skipped = find_photos(folder)
        assert photos == [] and any("pillow-heif" in reason for reason in skipped)
        return
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    Image.open(ASSETS / "chelsea.jpg").save(folder / "IMG_0001.HEIC")
    summary = describe_library(folder, tmp_path / "d.jsonl", FAST)
    assert (summary.described, summary.failed) == (1, 0)
    assert records(tmp_path / "d.jsonl")[0]["status"] == "ok"


def test_large_jpegs_are_decoded_scaled_small_ones_exactly(tmp_path, photos):
    from edgecap.core.image import read_image

    for path, rgb in zip(sorted(ASSETS.glob("*.jpg")), [read_image(p) for p in sorted(ASSETS.glob("*.jpg"))]):
        data = path.read_bytes()
        assert jpeg_size(data) == rgb.shape[:2]
        assert np.array_equal(decode_photo(data, path.name, 896), rgb)
    big = cv2.resize(photos[3], (6000, 4000), interpolation=cv2.INTER_CUBIC)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    scaled = decode_photo(encoded.tobytes(), "big.jpg", 896)
    assert scaled.shape == (1000, 1500, 3)  # 1/4: the shorter side stays >= 896
    assert jpeg_size(b"\x89PNG\r\n") is None
    # Scaled or not, a cut file is reported, as `edgecap caption` reports it, never described.
    from edgecap.core.image import ImageError

    with pytest.raises(ImageError, match="big.jpg: .*(incomplete|truncated)"):
        decode_photo(encoded.tobytes()[: len(encoded) * 9 // 10], "big.jpg", 896)


def test_a_sidecar_that_is_not_xmp_is_left_alone(tmp_path):
    from edgecap.library.sidecars import SidecarError

    photo = tmp_path / "IMG_2.jpg"
    (tmp_path / "IMG_2.jpg.xmp").write_text("my own notes, not XML")
    with pytest.raises(SidecarError, match="IMG_2.jpg.xmp"):
        write_sidecar(photo, "xmp", "A cat.")
    assert (tmp_path / "IMG_2.jpg.xmp").read_text() == "my own notes, not XML"


def test_workers_times_threads_never_exceed_the_cores():
    for cores in (1, 2, 4, 16):
        for workers in (1, 2, 3, 8):
            for threads in (None, 1, 2, 4):
                w, t = plan_workers(workers, threads, cores)
                assert 1 <= w <= cores and w * t <= cores
    assert plan_workers(2, None, 2) == (2, 1) and plan_workers(4, None, 2) == (2, 1)


def test_describe_takes_the_same_decoding_flags_as_caption(tmp_path, capsys):
    from edgecap.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ASSETS / "chelsea.jpg", folder)
    base = ["describe", str(folder), "--quiet", "--provider", "cpu", "--threads", "1", "--no-rerank"]
    assert main(base + ["--out", str(tmp_path / "off.jsonl"), "--no-calibration"]) == 0
    assert main(base + ["--out", str(tmp_path / "strong.jsonl"), "--calibration", "alpha=3,tau=0.5"]) == 0
    for name in ("off", "strong"):
        (record,) = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert record["status"] == "ok" and record["caption"]
    assert main(base + ["--out", str(tmp_path / "bad.jsonl"), "--calibration", "bogus=1"]) == 2
    assert "unknown calibration setting 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "bad.jsonl").exists()
