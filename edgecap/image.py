"""Reading images, spotting ones that cannot be described, and turning them into model input."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgecap.bundle import Preprocessing

DARK_MESSAGE = "The image is almost completely dark."
BRIGHT_MESSAGE = "The image is almost completely white; it may be overexposed."
UNIFORM_MESSAGE = "The image is a single uniform colour; nothing to describe."
EXPOSURE_MESSAGES = {"dark": DARK_MESSAGE, "bright": BRIGHT_MESSAGE, "uniform": UNIFORM_MESSAGE}

DARK_MEAN = 18.0  # mean luminance (0-255) under which a frame counts as dark
BRIGHT_MEAN = 245.0
UNIFORM_STD = 3.0  # luminance spread under which a frame has no content


class ImageError(Exception):
    """An image that cannot be read; the message is one line for the user."""


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an image file, or ImageError."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def decode_image(data: np.ndarray | bytes, label: str = "image") -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buf.size == 0:
        raise ImageError(f"{label}: empty file")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageError(f"{label}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept gray, RGB or RGBA uint8 arrays."""
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ImageError(f"expected an (H, W[, 3|4]) image, got shape {image.shape}")


def luminance_stats(rgb: np.ndarray) -> tuple[float, float]:
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(gray.mean()), float(gray.std())


def exposure_problem(rgb: np.ndarray) -> str | None:
    """'dark', 'bright' or 'uniform' for frames with nothing describable, else None.

    A captioner asked about a black frame still produces a fluent sentence, which a
    blind user cannot check, so such frames never reach the model.
    """
    mean, std = luminance_stats(rgb)
    if mean < DARK_MEAN:
        return "dark"
    if mean > BRIGHT_MEAN and std < 2 * UNIFORM_STD:
        return "bright"
    if std < UNIFORM_STD:
        return "uniform"
    return None


def resize_for_model(rgb: np.ndarray, prep: Preprocessing) -> np.ndarray:
    h, w = prep.image_size
    if prep.resize == "center_crop":
        scale = max(h / rgb.shape[0], w / rgb.shape[1])
        rh, rw = max(h, round(rgb.shape[0] * scale)), max(w, round(rgb.shape[1] * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resized = cv2.resize(rgb, (rw, rh), interpolation=interp)
        top, left = (rh - h) // 2, (rw - w) // 2
        return resized[top:top + h, left:left + w]
    if prep.resize != "squash":
        raise ValueError(f"unknown resize mode {prep.resize!r}")
    interp = cv2.INTER_AREA if rgb.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)


def normalize(resized: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 as the encoder expects."""
    x = resized.astype(np.float32) * np.float32(prep.rescale)
    x = (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))
