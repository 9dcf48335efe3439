"""Reading images, spotting ones that cannot be described, and turning them into model input."""
from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgecap.core.bundle import Preprocessing
from edgecap.core.imageheader import HeaderError, probe

DARK_MESSAGE = "The image is almost completely dark."
BRIGHT_MESSAGE = "The image is almost completely white; it may be overexposed."
UNIFORM_MESSAGE = "The image is a single uniform colour; nothing to describe."
EXPOSURE_MESSAGES = {"dark": DARK_MESSAGE, "bright": BRIGHT_MESSAGE, "uniform": UNIFORM_MESSAGE}

DARK_MEAN = 18.0  # mean luminance (0-255) under which a frame counts as dark
BRIGHT_MEAN = 245.0
UNIFORM_STD = 3.0  # luminance spread under which a frame has no content


INCOMPLETE_MESSAGE = "The image could not be read completely."
BACKGROUND = 128  # the neutral grey transparent pixels are shown on


class ImageError(Exception):
    """An image that cannot be read; the message is one line for the user."""


class ImageIncomplete(ImageError):
    """The decoder complained about damaged data: what came back is not the whole picture."""


@dataclass(frozen=True)
class DecodeLimits:
    """What one file may cost before it is decoded. The defaults suit a Raspberry Pi: a
    40 MP JPEG decodes at a reduced scale, and nothing bigger is decoded at all."""

    max_pixels: int = 40_000_000  # width x height declared in the header
    max_bytes: int = 64 << 20  # size of the file itself
    max_side: int = 2048  # longest side kept after decoding (the model sees 224)


DEFAULT_LIMITS = DecodeLimits()


def read_image(path: str | Path, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a regular image file, or ImageError naming the file."""
    label = display_name(path)
    data = read_capped(path, limits.max_bytes, label)
    return decode_image(data, label, limits)


def display_name(path: str | Path) -> str:
    """A file name that prints as one line: bytes that are not UTF-8 and control characters
    (a newline could fake an output line) are shown as escapes."""
    text = os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def read_capped(path: str | Path, max_bytes: int, label: str) -> bytes:
    """The bytes of a regular file of at most max_bytes. FIFOs and devices are refused
    without blocking: they are opened non-blocking and checked before any read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{label}: is a directory, not an image")
        raise ImageError(f"{label}: not a regular file (a pipe, socket or device); not read")
    with os.fdopen(fd, "rb", buffering=0) as f:
        if st.st_size > max_bytes:
            raise ImageError(f"{label}: file is {_mb(st.st_size)}, more than the {_mb(max_bytes)} limit")
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ImageError(f"{label}: file is more than the {_mb(max_bytes)} limit")
    return data


def decode_image(data: np.ndarray | bytes, label: str = "image", limits: DecodeLimits = DEFAULT_LIMITS
                 ) -> np.ndarray:
    """Check the header against the limits, decode, shrink to max_side, then RGB uint8."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise ImageError(f"{label}: empty file")
    try:
        header = probe(memoryview(buf))
    except HeaderError as exc:
        raise ImageError(f"{label}: {exc}") from None
    if header.pixels > limits.max_pixels:
        raise ImageError(f"{label}: {header.width}x{header.height} pixels ({header.pixels / 1e6:.0f} MP) is more "
                         f"than the {limits.max_pixels / 1e6:g} MP limit; not decoded")
    if header.decoded_bytes > 3 * limits.max_pixels:  # 16-bit with alpha: 8 bytes a pixel
        raise ImageError(f"{label}: {header.width}x{header.height} pixels with transparency would take "
                         f"{header.decoded_bytes >> 20} MB to decode, more than the {3 * limits.max_pixels >> 20} "
                         "MB limit; not decoded")
    if header.file_size is not None and not header.file_size <= buf.size <= header.file_size + 1024:
        # Formats without checksums (BMP, WebP) decode cut, spliced or re-headed files into garbage
        # without a word; their declared sizes are the check that is left.
        raise ImageIncomplete(f"{label}: {INCOMPLETE_MESSAGE} (the {header.format} header declares "
                              f"{header.file_size} bytes, the file has {buf.size})")
    flags = cv2.IMREAD_UNCHANGED if header.alpha else cv2.IMREAD_COLOR
    if header.format == "JPEG":
        flags = _reduced_jpeg_flag(max(header.width, header.height), limits.max_side)
    with _decoder_messages() as messages:
        try:
            image = cv2.imdecode(buf, flags)
        except cv2.error as exc:
            raise ImageError(f"{label}: not a readable image ({_first_line(str(exc))})") from None
    if image is None or image.size == 0:
        raise ImageError(f"{label}: not a readable {header.format} image (corrupt or truncated)")
    if messages:
        raise ImageIncomplete(f"{label}: {INCOMPLETE_MESSAGE} ({header.format} decoder: {messages[0]})")
    image = shrink(_to_uint8(image), limits.max_side)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)
    if image.ndim == 3 and image.shape[2] == 4:
        return composite(cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA, dst=image))
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    raise ImageError(f"{label}: unsupported channel layout {image.shape}")


def _reduced_jpeg_flag(side: int, max_side: int) -> int:
    """libjpeg can decode at 1/2, 1/4 or 1/8 scale directly: pick the smallest scale that
    still gives at least max_side pixels, so a big photo never exists at full size."""
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if side // factor >= max_side:
            return flag
    return cv2.IMREAD_COLOR


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    return np.clip(np.nan_to_num(image.astype(np.float32)) * 255.0, 0, 255).astype(np.uint8)


def composite(rgba: np.ndarray) -> np.ndarray:
    """RGBA -> RGB on neutral grey. Pixels hidden under zero alpha are never shown: a fully
    transparent image becomes plain grey, which exposure_problem reports as blank."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16) * alpha + BACKGROUND * (255 - alpha)
    return ((rgb + 127) // 255).astype(np.uint8)


_DECODER_LOCK = threading.Lock()
# What libjpeg, libpng, libtiff and OpenCV print when the data is damaged but decoding goes on.
_DAMAGE = re.compile(r"corrupt|premature|truncat|extraneous|invalid|bad |crc|error|warn|fail|unexpected|"
                     r"incomplete|overflow|damaged|not enough|too (few|many|short)", re.IGNORECASE)


@contextmanager
def _decoder_messages():
    """The decoder libraries report damage only on the C stderr: catch what they write there
    during one decode (lines that are not about damage are passed on to the real stderr)."""
    messages: list[str] = []
    with _DECODER_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable stderr: decode without the check
            yield messages
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield messages
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                text = tmp.read(1 << 16).decode("utf-8", "replace")
        for line in filter(None, (ln.strip() for ln in text.splitlines())):
            if _DAMAGE.search(line) and not line.startswith("edgecap"):  # not our own log lines
                messages.append(line)
            else:
                print(line, file=sys.stderr)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "decoder error")[:200]


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB" if n >= 1 << 20 else f"{n} bytes"


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept gray, RGB or RGBA uint8 arrays (RGBA is composited onto neutral grey)."""
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return composite(image)
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
