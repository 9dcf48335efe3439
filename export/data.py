"""Captioned photos from shared/data, backbone features cached once so epochs are cheap, and
the photos a build step calibrates or checks itself on."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgecap.core.bundle import Preprocessing
from edgecap.core.image import ImageError, normalize, read_image, resize_for_model
from export.tokenizer import PAD_ID

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
ASSETS = REPO / "assets"


@dataclass(frozen=True)
class Record:
    path: Path
    key: str  # file name, stable across runs
    captions: tuple[str, ...]
    split: str  # train | val | unlabeled


def load_records(data_dir: Path = DEFAULT_DATA, split: str | None = None, unlabeled: bool = False) -> list[Record]:
    data_dir = Path(data_dir)
    captioned = data_dir / "captioned" if (data_dir / "captioned").is_dir() else data_dir
    records = []
    with open(captioned / "captions.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if split is None or row.get("split") == split:
                records.append(Record(captioned / row["file"], Path(row["file"]).name, tuple(row["captions"]),
                                      row.get("split", "val")))
    if unlabeled:
        for p in sorted((data_dir / "unlabeled" / "images").glob("*.jpg")):
            records.append(Record(p, p.name, (), "unlabeled"))
    return records


def _backbone_session(backbone: torch.nn.Module, image_size: int):
    """The frozen backbone as an onnxruntime session: ~2x faster than eager torch on CPU."""
    import onnxruntime as ort

    class Grid(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_grid(x).flatten(2).transpose(1, 2)

    path = Path(tempfile.mkdtemp()) / "backbone.onnx"
    batch = torch.export.Dim("batch", min=1, max=256)
    torch.onnx.export(Grid(backbone).eval(), (torch.randn(2, 3, image_size, image_size),), str(path),
                      input_names=["pixels"], output_names=["grid"], dynamic_shapes={"x": {0: batch}},
                      dynamo=True, opset_version=18)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def cache_features(records: list[Record], backbone: torch.nn.Module, prep: Preprocessing, out: Path,
                   flip: bool = False, batch: int = 32) -> np.ndarray:
    """(n, N, C) float16 backbone tokens for each record, computed once and memory-mapped after."""
    out = Path(out)
    keys_path = out.with_suffix(".keys.json")
    keys = [r.key for r in records]
    if out.exists() and keys_path.exists() and json.loads(keys_path.read_text()) == keys:
        return np.load(out, mmap_mode="r")
    out.parent.mkdir(parents=True, exist_ok=True)
    session = _backbone_session(backbone, prep.image_size[0])
    chunks, start = [], time.time()
    for i in range(0, len(records), batch):
        pixels = []
        for r in records[i:i + batch]:
            try:
                rgb = read_image(r.path)
            except ImageError as exc:
                log.warning("%s; using a black frame", exc)
                rgb = np.zeros((*prep.image_size, 3), np.uint8)
            resized = resize_for_model(rgb, prep)
            pixels.append(normalize(resized[:, ::-1] if flip else resized, prep))
        chunks.append(session.run(None, {"pixels": np.stack(pixels)})[0].astype(np.float16))
        if (i // batch) % 20 == 0:
            log.info("features %d/%d (%.0f img/s)", i + len(pixels), len(records),
                     (i + len(pixels)) / (time.time() - start))
    features = np.concatenate(chunks)
    np.save(out, features)
    keys_path.write_text(json.dumps(keys))
    return np.load(out, mmap_mode="r")


def feature_cache(variant: str, image_size: int, split: str, flip: bool = False, data_dir: Path = DEFAULT_DATA,
                  cache_dir: Path = Path("cache")) -> tuple[list[Record], np.ndarray]:
    """Records of one split (train | val | unlabeled) and their cached backbone features."""
    from export.efficientnet import LITE_PREPROCESSING, EfficientNetLite

    if split == "unlabeled":
        records = [r for r in load_records(data_dir, split="none", unlabeled=True)]
    else:
        records = load_records(data_dir, split=split)
    prep = Preprocessing(image_size=(image_size, image_size), **LITE_PREPROCESSING)
    name = f"{variant}_{image_size}_{split}{'_flip' if flip else ''}.npy"
    out = Path(cache_dir) / name
    if out.exists() and out.with_suffix(".keys.json").exists():
        return records, cache_features(records, None, prep, out, flip)
    return records, cache_features(records, EfficientNetLite.pretrained(variant), prep, out, flip)


class CaptionData:
    """Cached features of one backbone plus the records they belong to, over one or more splits.

    With `flip`, the train split's horizontally flipped features are cached too, for the
    one image augmentation that survives caching.
    """

    def __init__(self, encoder: str, image_size: int, data_dir: Path, cache_dir: Path, splits=("train",),
                 flip: bool = False):
        feats, flips, self.records = [], [], []
        for split in splits:
            recs, f = feature_cache(encoder, image_size, split, False, data_dir, cache_dir)
            feats.append(torch.from_numpy(np.asarray(f)))
            flipped = flip and split == "train"
            flips.append(torch.from_numpy(np.asarray(
                feature_cache(encoder, image_size, split, True, data_dir, cache_dir)[1])) if flipped else None)
            self.records += recs
        self.features = torch.cat(feats)
        offsets = np.cumsum([0] + [len(f) for f in feats])
        self.flipped = {}  # row in self.features -> row in flip table
        flip_tables = []
        for (start, f) in zip(offsets, flips):
            if f is not None:
                base = sum(len(t) for t in flip_tables)
                flip_tables.append(f)
                self.flipped.update({start + i: base + i for i in range(len(f))})
        self.flip_features = torch.cat(flip_tables) if flip_tables else None

    def batch_features(self, rows: list[int], flips: list[bool]) -> torch.Tensor:
        out = [self.flip_features[self.flipped[r]] if fl and r in self.flipped else self.features[r]
               for r, fl in zip(rows, flips)]
        return torch.stack(out).float()


def pad_ids(rows: list[list[int]], length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r[:length])
    return out


def calibration_images(data: Path, count: int = 96) -> list[Path]:
    """Real photos for static quantization: unlabelled ones first (never the val split)."""
    unlabeled = sorted((Path(data) / "unlabeled" / "images").glob("*.jpg"))
    if unlabeled:
        step = max(1, len(unlabeled) // count)
        return unlabeled[::step][:count]
    return sorted(ASSETS.glob("*.jpg"))


def parity_images(data: Path, count: int = 64) -> list[Path]:
    """Val photos to compare an int8 bundle with its fp32 source on (assets/ without data)."""
    try:
        return [r.path for r in load_records(data, split="val")[:count]]
    except FileNotFoundError:
        return sorted(ASSETS.glob("*.jpg"))
