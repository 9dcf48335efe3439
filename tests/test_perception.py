"""Perception in the shipped bundle: objects, faces and ImageNet labels on real photos."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecap.core.bundle import BundleError, load_bundle, write_manifest
from edgecap.vision.perception import (ROLES, DetectorSettings, Perceiver, decode_yolox, grid_points, inside,
                                letterbox, per_class_nms, to_unit_boxes)

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "edgecap-base"
CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def seen(photo_paths):
    """name -> (Perception, rgb) for the four photos in assets/, through the shipped bundle."""
    from edgecap.core.image import read_image
    from edgecap.core.model import OnnxCaptioner

    captioner = OnnxCaptioner.load(BUNDLE, provider="cpu", threads=1)
    perceiver = Perceiver.from_bundle(captioner.bundle, CPU, 1)
    assert perceiver is not None, "the shipped bundle has no perception members"
    out = {}
    for path in photo_paths:
        rgb = read_image(path)
        out[path.stem] = (perceiver.perceive(rgb, captioner.encode([rgb]).pooled[0]), rgb)
    return perceiver, out


def names(perception, at: float) -> set[str]:
    return {d.name for d in perception.objects if d.score >= at}


def test_coffee_is_a_cup_on_a_table(seen):
    p = seen[1]["coffee"][0]
    assert names(p, 0.5) & {"cup", "dining table"}
    assert p.labels[0][0] in ("cup of coffee", "cup") and p.labels[0][1] > 0.5
    assert not p.faces


def test_astronaut_is_one_person_with_one_face(seen):
    p = seen[1]["astronaut"][0]
    assert "person" in names(p, 0.5)
    assert len(p.faces) == 1 and p.faces[0].name == "face"
    person = next(d for d in p.objects if d.name == "person")
    fx0, fy0, fx1, fy1 = p.faces[0].box
    x0, y0, x1, y1 = person.box
    assert x0 <= fx0 < fx1 <= x1 and y0 <= fy0 < fy1 <= y1, "the face lies inside the person"


def test_rocket_has_no_person(seen):
    p = seen[1]["rocket"][0]
    assert "person" not in names(p, DetectorSettings().score_floor)
    assert not p.faces


def test_chelsea_is_a_cat(seen):
    p = seen[1]["chelsea"][0]
    assert "cat" in names(p, 0.5) or (p.labels[0][0] == "cat" and p.labels[0][1] > 0.5)
    assert "dog" not in names(p, 0.5)


def test_outputs_are_well_formed(seen):
    perceiver, results = seen
    for perception, rgb in results.values():
        for d in perception.objects + perception.faces:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert perceiver.detector_settings.score_floor <= d.score <= 1 or d.name == "face"
        scores = [d.score for d in perception.objects]
        assert scores == sorted(scores, reverse=True)
        probs = [p for _, p in perception.labels]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert len({n for n, _ in perception.labels}) == 5, "coarse names are merged, not repeated"
        assert perceiver.perceive(rgb, None).labels == ()


def test_boxes_come_back_in_frame_coordinates(seen):
    """The astronaut pasted off-centre into a wider grey canvas: boxes move and shrink with it."""
    perceiver, results = seen
    base, rgb = results["astronaut"]
    h, w = rgb.shape[:2]
    canvas = np.full((h + 100, 2 * w, 3), 128, dtype=np.uint8)
    top, left = 60, w - 40
    canvas[top:top + h, left:left + w] = rgb
    moved = perceiver.perceive(canvas, None)
    ch, cw = canvas.shape[:2]

    def expected(box):
        x0, y0, x1, y1 = box
        return ((left + x0 * w) / cw, (top + y0 * h) / ch, (left + x1 * w) / cw, (top + y1 * h) / ch)

    person = next(d for d in moved.objects if d.name == "person")
    before = next(d for d in base.objects if d.name == "person")
    assert np.allclose(person.box, expected(before.box), atol=0.03)
    assert len(moved.faces) == 1
    assert np.allclose(moved.faces[0].box, expected(base.faces[0].box), atol=0.03)


def test_letterbox_and_unit_boxes_round_trip():
    frame = np.zeros((300, 600, 3), dtype=np.uint8)
    pixels, scale = letterbox(frame, 256)
    assert pixels.shape == (1, 3, 256, 256) and scale == pytest.approx(256 / 600)
    assert pixels[0, :, 128:, :].min() == 114 and pixels[0, :, :127, :].max() == 0  # grey below the frame
    box_px = np.array([[60.0, 30.0, 300.0, 270.0]])  # in the 600 x 300 frame
    unit = to_unit_boxes(box_px * scale, scale, 300, 600)
    assert np.allclose(unit, [[0.1, 0.1, 0.5, 0.9]])
    assert np.allclose(to_unit_boxes(np.array([[-5.0, -5.0, 999.0, 999.0]]), scale, 300, 600), [[0, 0, 1, 1]])
    in_padding = to_unit_boxes(np.array([[10.0, 200.0, 60.0, 250.0]]), scale, 300, 600)  # below the frame
    assert inside(in_padding).tolist() == [False] and inside(unit).tolist() == [True]


def test_letterbox_padded_to_stride_keeps_the_frame_and_drops_the_square():
    frame = np.random.default_rng(0).integers(0, 255, (300, 451, 3), dtype=np.uint8)
    square, scale = letterbox(frame, 320)
    padded, scale_padded = letterbox(frame, 320, pad_to=32)
    assert scale_padded == scale and padded.shape == (1, 3, 224, 320)  # 212 rows, padded up to 224
    assert np.array_equal(padded, square[:, :, :224])  # the same shrunk frame on the same grey


def test_detector_padded_to_stride(tmp_path):
    """A graph with free height and width runs at the frame's shape: a square photo gives exactly the
    square letterbox's objects; a 3:2 one runs on fewer anchors and still finds the cat."""
    onnx = pytest.importorskip("onnx")
    from dataclasses import replace

    from edgecap.core.image import read_image
    from edgecap.core.providers import create_session

    bundle = load_bundle(BUNDLE)
    square = Perceiver.from_bundle(bundle, CPU, 1)
    if not square.detector_settings.pad_to_stride:
        dst = _copy_bundle(tmp_path)
        manifest = json.loads((dst / "manifest.json").read_text())
        manifest["perception"]["detector"]["pad_to_stride"] = True
        write_manifest(dst, manifest)
        with pytest.raises(BundleError, match="fixed"):  # a fixed graph cannot be padded to the stride
            Perceiver.from_bundle(load_bundle(dst), CPU, 1)
        model = onnx.load_from_string(bundle.read_verified("detector"))
        for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width")):
            dim.dim_param = name
        padded = Perceiver.from_bundle(bundle, CPU, 1)
        padded.detector = create_session(model.SerializeToString(), CPU, 1, "detector")
        padded.detector_settings = replace(padded.detector_settings, pad_to_stride=True)
    else:
        padded = square
        square = Perceiver.from_bundle(bundle, CPU, 1)
        square.detector_settings = replace(square.detector_settings, pad_to_stride=False)
    astronaut = read_image(BUNDLE.parents[1] / "assets" / "astronaut.jpg")
    assert astronaut.shape[0] == astronaut.shape[1]
    assert padded.detect_objects(astronaut, from_rgb=True) == square.detect_objects(astronaut, from_rgb=True)
    chelsea = read_image(BUNDLE.parents[1] / "assets" / "chelsea.jpg")
    assert chelsea.shape[:2] == (300, 451)
    found = padded.detect_objects(chelsea, from_rgb=True)
    assert found and found[0].name == "cat"
    cat = next(d for d in square.detect_objects(chelsea, from_rgb=True) if d.name == "cat")
    assert np.allclose(found[0].box, cat.box, atol=0.02) and abs(found[0].score - cat.score) < 0.1


def test_yolox_decode_and_per_class_nms():
    settings = DetectorSettings(input_size=64, score_floor=0.25)
    points, strides = grid_points((64, 64), settings.strides)
    assert points.shape[0] == 8 * 8 + 4 * 4 + 2 * 2
    raw = np.zeros((points.shape[0], 5 + 80), dtype=np.float32)

    def put(index, dx, dy, log_w, log_h, objectness, cls, p):
        raw[index, :5] = [dx, dy, log_w, log_h, objectness]
        raw[index, 5 + cls] = p

    put(9, 0.5, 0.5, np.log(2.0), np.log(4.0), 0.9, 15, 0.9)  # stride 8, cell (1, 1): centre (12, 12), 16 x 32
    put(10, 0.0, 0.5, np.log(2.0), np.log(4.0), 0.9, 15, 0.8)  # same class, overlaps it: suppressed
    put(11, 0.0, 0.5, np.log(2.0), np.log(4.0), 0.9, 16, 0.8)  # other class beside it: kept
    put(70, 0.0, 0.0, 0.0, 0.0, 0.2, 1, 0.9)  # objectness x class below the floor
    boxes, scores, classes = decode_yolox(raw, settings)
    assert classes.tolist() == [15, 16]
    assert np.allclose(boxes[0], [4, -4, 20, 28])
    assert np.allclose(scores, [0.81, 0.72])
    with pytest.raises(BundleError, match="anchor points"):
        decode_yolox(raw[:-1], settings)


def test_nms_keeps_disjoint_and_best():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    keep = per_class_nms(boxes, np.array([0.6, 0.9, 0.5]), np.array([0, 0, 0]), 0.45)
    assert keep.tolist() == [1, 2]


def _copy_bundle(tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("eval", "*.md"))
    return dst


def test_tampered_perception_member_is_refused(tmp_path):
    dst = _copy_bundle(tmp_path)
    data = bytearray((dst / "detector.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / "detector.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="detector.onnx does not match its sha256"):
        Perceiver.from_bundle(load_bundle(dst), CPU, 1)


def test_bundle_without_perception_gives_none_and_partial_is_refused(tmp_path):
    dst = _copy_bundle(tmp_path)
    manifest = json.loads((dst / "manifest.json").read_text())
    files = manifest["files"]
    (dst / files.pop("faces")).unlink()
    write_manifest(dst, manifest)
    with pytest.raises(BundleError, match="perception is incomplete"):
        Perceiver.from_bundle(load_bundle(dst), CPU, 1)
    for role in ROLES:
        if role in files:
            (dst / files.pop(role)).unlink()
    manifest.pop("perception")
    write_manifest(dst, manifest)
    assert Perceiver.from_bundle(load_bundle(dst), CPU, 1) is None


def test_spoken_phrases(seen):
    head = seen[0].head
    assert head.phrase("dog") == "a dog"
    assert head.phrase("umbrella") == "an umbrella"
    assert head.phrase("sunglasses") == "sunglasses"
    assert head.phrase("space shuttle") == "a space shuttle"
    assert set(head.coarse_names[i] for i in head.coarse_index[151:269]) == {"dog"}  # every breed is "a dog"
