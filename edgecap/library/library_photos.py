"""Finding the photos of a library and reading them: which files count, and their pixels."""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from edgecap.core.image import ImageError, decode_image

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
    for a model that looks at 224 pixels.
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
    flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[scale]
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if bgr is None or bgr.size == 0:
        raise ImageError(f"{label}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, without decoding; None if not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


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
