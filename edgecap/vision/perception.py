"""What is really in a photo: objects (YOLOX-Nano), faces (YuNet) and an ImageNet posterior.

These are optional bundle members (`detector`, `faces`, `imagenet_head`), verified like
every other file. The captioner's own words are checked against them elsewhere
(edgecap/caption.py); this module only sees. One decoded RGB frame feeds every graph,
and the ImageNet posterior reuses the encoder's pooled vector instead of running a
second backbone.
"""
from __future__ import annotations

import functools
import io
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from edgecap.core.bundle import Bundle, BundleError
from edgecap.core.image import as_rgb
from edgecap.core.providers import create_session, in_background, return_freed_memory, settle

ROLES = ("detector", "faces", "imagenet_head")
LETTERBOX_GREY = 114
TOP_LABELS = 5


@dataclass(frozen=True)
class Detection:
    name: str  # COCO class name (first column of the CHAIR synonyms), or "face"
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in 0-1 image coordinates


@dataclass(frozen=True)
class Perception:
    objects: tuple[Detection, ...]  # after NMS, score >= the detector's floor, best first
    faces: tuple[Detection, ...]
    labels: tuple[tuple[str, float], ...]  # ImageNet top-5 as (coarse spoken name, summed probability)
    ms: float


@dataclass(frozen=True)
class DetectorSettings:
    input_size: int = 416  # letterbox side the graph runs at (the longer side with pad_to_stride)
    strides: tuple[int, ...] = (8, 16, 32)
    score_floor: float = 0.25
    nms_iou: float = 0.45
    max_detections: int = 50
    # False: a square input_size canvas. True: the frame keeps its shape, longer side at input_size,
    # padded to a multiple of the largest stride (a graph with free height and width): a 4:3 photo
    # runs at 320x256 instead of 320x320, and the shrunk frame is the same.
    pad_to_stride: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DetectorSettings":
        return cls(input_size=int(d["input_size"]), strides=tuple(d.get("strides", cls.strides)),
                   score_floor=float(d.get("score_floor", cls.score_floor)),
                   nms_iou=float(d.get("nms_iou", cls.nms_iou)),
                   max_detections=int(d.get("max_detections", cls.max_detections)),
                   pad_to_stride=bool(d.get("pad_to_stride", cls.pad_to_stride)))


@dataclass(frozen=True)
class FaceSettings:
    long_side: int = 240  # the frame is shrunk so its longer side is this, then padded to /32
    strides: tuple[int, ...] = (8, 16, 32)
    score_floor: float = 0.6
    nms_iou: float = 0.3

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FaceSettings":
        return cls(long_side=int(d.get("long_side", cls.long_side)), strides=tuple(d.get("strides", cls.strides)),
                   score_floor=float(d.get("score_floor", cls.score_floor)),
                   nms_iou=float(d.get("nms_iou", cls.nms_iou)))


# --- geometry ------------------------------------------------------------------------
def letterbox(bgr: np.ndarray, size: int, from_rgb: bool = False, pad_to: int = 0) -> tuple[np.ndarray, float]:
    """Shrink into a size x size grey canvas at the top left, keeping the aspect; (NCHW float32 BGR, scale).

    pad_to: instead of a square, the canvas is the shrunk frame padded up to a multiple of pad_to.
    from_rgb: the frame is RGB; its channels are swapped after shrinking, which gives the same
    numbers as shrinking the BGR frame (a resize treats each channel alike) for less copying."""
    h, w = bgr.shape[:2]
    scale = min(size / h, size / w)
    nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(bgr, (nw, nh), interpolation=interp)
    canvas = (-(-nh // pad_to) * pad_to, -(-nw // pad_to) * pad_to) if pad_to else (size, size)
    return _planes(small, canvas, LETTERBOX_GREY, from_rgb), scale


def _planes(image: np.ndarray, size_hw: tuple[int, int], fill: int, swap: bool) -> np.ndarray:
    """(1, 3, H, W) float32 canvas of `fill` with the HWC uint8 image at its top left, channels reversed if swap."""
    canvas = np.full((1, 3, *size_hw), fill, dtype=np.float32)
    planes = image.transpose(2, 0, 1)
    canvas[0, :, :image.shape[0], :image.shape[1]] = planes[::-1] if swap else planes
    return canvas


@functools.lru_cache(maxsize=32)
def grid_points(size_hw: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor-point centres (N, 2) in grid units and their strides (N,), row-major per stride (read-only:
    one copy per input size is kept)."""
    points, point_strides = [], []
    for s in strides:
        gh, gw = -(-size_hw[0] // s), -(-size_hw[1] // s)
        ys, xs = np.mgrid[0:gh, 0:gw]
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        point_strides.append(np.full(gh * gw, s))
    points_a, strides_a = np.concatenate(points).astype(np.float32), np.concatenate(point_strides).astype(np.float32)
    points_a.setflags(write=False)
    strides_a.setflags(write=False)
    return points_a, strides_a


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first. boxes (N, 4) x0 y0 x1 y1."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def per_class_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """NMS within each class at once: boxes of different classes are shifted apart so they never overlap."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    shift = (classes.astype(np.float32) * (float(boxes.max()) + 1.0))[:, None]
    return nms(boxes + shift, scores, iou)


def to_unit_boxes(boxes: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """Boxes in model pixels -> 0-1 coordinates of the original frame, clipped to it."""
    out = boxes / scale
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width) / width
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height) / height
    return out


def inside(unit: np.ndarray) -> np.ndarray:
    """Mask of boxes with some area left in the frame (not wholly in the letterbox padding)."""
    return (unit[:, 2] > unit[:, 0]) & (unit[:, 3] > unit[:, 1])


# --- detectors -----------------------------------------------------------------------
def decode_yolox(raw: np.ndarray, settings: DetectorSettings, size_hw: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 5 + C) raw rows -> boxes (M, 4) in model pixels, scores (M,), classes (M,) after per-class NMS.

    size_hw: the graph's input height and width (default: the square input_size)."""
    size_hw = size_hw or (settings.input_size, settings.input_size)
    points, strides = grid_points(tuple(size_hw), tuple(settings.strides))
    if raw.shape[0] != points.shape[0]:
        raise BundleError(f"detector gives {raw.shape[0]} anchor points, expected {points.shape[0]} "
                          f"at input {size_hw[0]}x{size_hw[1]}")
    scores_all = raw[:, 4:5] * raw[:, 5:]  # objectness x class, both already sigmoid-ed
    rows, classes = np.nonzero(scores_all >= settings.score_floor)
    if rows.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    centre = (raw[rows, 0:2] + points[rows]) * strides[rows, None]
    half = np.exp(raw[rows, 2:4]) * strides[rows, None] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    scores = scores_all[rows, classes]
    keep = per_class_nms(boxes, scores, classes, settings.nms_iou)[:settings.max_detections]
    return boxes[keep], scores[keep], classes[keep]


def decode_yunet(outputs: dict[str, np.ndarray], size_hw: tuple[int, int], settings: FaceSettings
                 ) -> tuple[np.ndarray, np.ndarray]:
    """YuNet's per-stride cls/obj/bbox outputs -> face boxes (M, 4) in input pixels and scores (M,)."""
    boxes, scores = [], []
    for s in settings.strides:
        cls = np.clip(outputs[f"cls_{s}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{s}"].reshape(-1), 0, 1)
        score = np.sqrt(cls * obj)
        keep = np.nonzero(score >= settings.score_floor)[0]
        if keep.size == 0:
            continue
        points, _ = grid_points(tuple(size_hw), (s,))
        reg = outputs[f"bbox_{s}"].reshape(-1, 4)[keep]
        centre = (points[keep] + reg[:, :2]) * s
        half = np.exp(reg[:, 2:4]) * s / 2
        boxes.append(np.concatenate([centre - half, centre + half], axis=1))
        scores.append(score[keep])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    boxes_a, scores_a = np.concatenate(boxes), np.concatenate(scores)
    keep = nms(boxes_a, scores_a, settings.nms_iou)
    return boxes_a[keep], scores_a[keep]


# --- ImageNet head -------------------------------------------------------------------
@dataclass(frozen=True)
class ImageNetHead:
    """logits = pooled @ (weight * scale).T + bias over the 1000 ImageNet classes, spoken coarsely."""

    weight: np.ndarray  # (1000, C) int8 per-row (with scale) or float
    scale: np.ndarray  # (1000,) per-row scale; ones for float weights
    bias: np.ndarray  # (1000,)
    coarse_index: np.ndarray  # (1000,) index into coarse_names
    coarse_names: tuple[str, ...]
    articles: tuple[str, ...]  # "a", "an" or "" (plural and mass nouns), per coarse name

    @classmethod
    def from_bytes(cls, data: bytes) -> "ImageNetHead":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            weight = z["weight"]
            if weight.dtype != np.int8:
                weight = weight.astype(np.float32)
            scale = z["weight_scale"].astype(np.float32) if "weight_scale" in z else np.ones(len(weight), np.float32)
            head = cls(weight=weight, scale=scale, bias=z["bias"].astype(np.float32),
                       coarse_index=z["coarse_index"].astype(np.int64),
                       coarse_names=tuple(str(s) for s in z["coarse_names"]),
                       articles=tuple(str(s) for s in z["articles"]))
        n = head.weight.shape[0]
        if not (head.bias.shape[0] == head.scale.shape[0] == head.coarse_index.shape[0] == n):
            raise ValueError("imagenet head: weight, bias and class map disagree in size")
        if head.coarse_index.max(initial=0) >= len(head.coarse_names) or len(head.articles) != len(head.coarse_names):
            raise ValueError("imagenet head: class map points past its coarse names")
        return head

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        x = np.asarray(pooled, np.float32).reshape(-1)
        rows = 250  # int8 rows widened a block at a time: the float weights are never all in memory
        raw = np.concatenate([self.weight[i:i + rows].astype(np.float32) @ x for i in range(0, len(self.weight), rows)])
        return raw * self.scale + self.bias

    def labels(self, pooled: np.ndarray, top: int = TOP_LABELS) -> tuple[tuple[str, float], ...]:
        logits = self.logits(pooled)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        coarse = np.bincount(self.coarse_index, weights=probs, minlength=len(self.coarse_names))
        best = np.argsort(-coarse, kind="stable")[:top]
        return tuple((self.coarse_names[i], float(coarse[i])) for i in best)

    def phrase(self, name: str) -> str:
        """The coarse name with its indefinite article: "a dog", "an espresso", "sunglasses"."""
        article = self.articles[self.coarse_names.index(name)]
        return f"{article} {name}" if article else name


# --- the perceiver -------------------------------------------------------------------
class Perceiver:
    """The bundle's perception graphs, run on one decoded frame."""

    def __init__(self, detector: ort.InferenceSession, faces: ort.InferenceSession, head: ImageNetHead,
                 classes: tuple[str, ...], detector_settings: DetectorSettings, face_settings: FaceSettings):
        self.detector = detector
        self.faces = faces
        self.head = head
        self.classes = classes
        self.detector_settings = detector_settings
        self.face_settings = face_settings
        self._detector_input = detector.get_inputs()[0].name
        self._face_input = faces.get_inputs()[0].name
        self._face_outputs = [o.name for o in faces.get_outputs()]

    @classmethod
    def from_bundle(cls, bundle: Bundle, providers: list[str], threads: int | None = None) -> "Perceiver | None":
        present = [r for r in ROLES if r in bundle.files]
        if not present:
            return None
        if len(present) != len(ROLES):
            missing = ", ".join(r for r in ROLES if r not in bundle.files)
            raise BundleError(f"{bundle.path}: perception is incomplete (no {missing} in the manifest)")
        config = bundle.manifest.get("perception", {})
        try:
            classes = tuple(config["detector"]["classes"])
            detector_settings = DetectorSettings.from_dict(config["detector"])
            face_settings = FaceSettings.from_dict(config.get("faces", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{bundle.path}: manifest perception section is malformed: {exc!r}") from None
        faces = in_background(lambda: create_session(bundle.read_verified("faces"), providers, threads,
                                                     "face detector"))
        try:
            try:
                head = ImageNetHead.from_bytes(bundle.read_verified("imagenet_head"))
            except (ValueError, KeyError, OSError) as exc:
                raise BundleError(f"{bundle.path}: {bundle.files['imagenet_head']}: {exc}") from None
            detector = create_session(bundle.read_verified("detector"), providers, threads, "detector")
            width = detector.get_outputs()[0].shape[-1]
            fixed = [d for d in detector.get_inputs()[0].shape[2:] if isinstance(d, int)]
            if detector_settings.pad_to_stride and fixed:
                raise BundleError(f"{bundle.path}: the manifest pads the detector's input to its stride, but its "
                                  f"graph input is fixed at {detector.get_inputs()[0].shape}")
            if isinstance(width, int) and width != 5 + len(classes):
                raise BundleError(f"{bundle.path}: detector scores {width - 5} classes, the manifest names "
                                  f"{len(classes)}")
        except BaseException:
            settle(faces)  # no thread left inside onnxruntime while the error ends the program
            raise
        perceiver = cls(detector, faces(), head, classes, detector_settings, face_settings)
        return_freed_memory()
        return perceiver

    def perceive(self, rgb: np.ndarray, pooled: np.ndarray | None = None) -> Perception:
        """Objects, faces and (given the encoder's pooled vector) ImageNet labels for one RGB uint8 frame."""
        start = time.perf_counter()
        rgb = as_rgb(rgb)  # both detectors were trained on BGR frames: channels are swapped once shrunk
        objects = self.detect_objects(rgb, from_rgb=True)
        # Faces only count people; where the detector sees no person at all, looking for them
        # costs time and can only add false faces (textures, noise).
        faces = self.detect_faces(rgb, from_rgb=True) if any(d.name == "person" for d in objects) else ()
        labels = self.head.labels(pooled) if pooled is not None else ()
        return Perception(objects=objects, faces=faces, labels=labels, ms=(time.perf_counter() - start) * 1000)

    def detect_objects(self, bgr: np.ndarray, from_rgb: bool = False) -> tuple[Detection, ...]:
        s = self.detector_settings
        pixels, scale = letterbox(bgr, s.input_size, from_rgb, max(s.strides) if s.pad_to_stride else 0)
        raw = self.detector.run(None, {self._detector_input: pixels})[0][0]
        boxes, scores, classes = decode_yolox(raw, s, pixels.shape[2:])
        unit = to_unit_boxes(boxes, scale, bgr.shape[0], bgr.shape[1])
        return tuple(Detection(self.classes[c], float(p), tuple(float(v) for v in b))  # type: ignore[arg-type]
                     for b, p, c, ok in zip(unit, scores, classes, inside(unit)) if ok)

    def detect_faces(self, bgr: np.ndarray, from_rgb: bool = False) -> tuple[Detection, ...]:
        s = self.face_settings
        h, w = bgr.shape[:2]
        scale = min(1.0, s.long_side / max(h, w))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        small = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA) if scale < 1 else bgr
        pixels = _planes(small, (ph, pw), 0, from_rgb)
        outputs = dict(zip(self._face_outputs, self.faces.run(self._face_outputs, {self._face_input: pixels})))
        boxes, scores = decode_yunet(outputs, (ph, pw), s)
        unit = to_unit_boxes(boxes, nw / w, h, w)
        return tuple(Detection("face", float(p), tuple(float(v) for v in b))  # type: ignore[arg-type]
                     for b, p, ok in zip(unit, scores, inside(unit)) if ok)
