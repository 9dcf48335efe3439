"""Finding the photos of a library and reading them: which files count, and their pixels."""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgecap.core.image import DEFAULT_LIMITS, ImageError, decode_image
from edgecap.core.imageheader import HeaderError, probe

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff"}
HEIF_SUFFIXES = {".heic", ".heif"}  # read through Pillow when pillow-heif is installed


def find_photos(root: str | Path) -> tuple[list[Path], Counter]:
    """Photos under root (sorted, hidden folders and sidecars left out), and why others were skipped."""
    root = Path(root)
    if root.is_file():
        return [root], Counter()
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder")
    heif = _heif_available()
    photos, skipped = [], Counter()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            suffix = Path(name).suffix.lower()
            if name.startswith(".") or suffix in (".xmp", ".txt", ".jsonl", ".edgecap-tmp"):
                continue
            if suffix in PHOTO_SUFFIXES or (suffix in HEIF_SUFFIXES and heif):
                photos.append(Path(folder) / name)
            elif suffix in HEIF_SUFFIXES:
                skipped["HEIC (pip install pillow-heif to read it)"] += 1
            else:
                skipped["not a photo"] += 1
    return photos, skipped


def _heif_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pillow_heif") is not None


def decode_photo(data: bytes, label: str, min_side: int = 0) -> np.ndarray:
    """RGB uint8 from file bytes: OpenCV as `edgecap caption` reads files, Pillow for HEIC.

    A JPEG whose shorter side is at least twice `min_side` is decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg scales while decoding), keeping that side >= min_side: a 24-megapixel photo is
    72 MB decoded and OpenCV's decoder briefly holds twice that, more than a worker may use,
    for a model that looks at 224 pixels. Every file goes through `decode_image`'s checks.
    """
    suffix = Path(label).suffix.lower()
    if suffix in HEIF_SUFFIXES:
        return _decode_heif(data, label)
    size = jpeg_size(data) if min_side else None
    scale = 1
    while size and scale < 8 and min(size) // (scale * 2) >= min_side:
        scale *= 2
    if scale == 1:
        return decode_image(data, label)
    # A longest side of 1/scale makes decode_image pick that libjpeg scale.
    return decode_image(data, label, replace(DEFAULT_LIMITS, max_side=max(size) // scale))


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, without decoding; None if not a JPEG."""
    try:
        header = probe(data)
    except HeaderError:
        return None
    return (header.height, header.width) if header.format == "JPEG" else None


def _decode_heif(data: bytes, label: str) -> np.ndarray:
    import io

    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's fault
        raise ImageError(f"{label}: not a readable HEIC image ({exc})") from None


def photo_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
