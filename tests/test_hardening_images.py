"""Images that must not take edgecap down: bombs, huge headers, pipes, damaged and transparent files."""
import os
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest

from edgecap.core.image import (INCOMPLETE_MESSAGE, DecodeLimits, ImageError, ImageIncomplete, as_rgb, decode_image,
                           display_name, exposure_problem, read_image)
from edgecap.core.imageheader import HeaderError, probe


def png(width, height, colour=2, idat=b"", extra=b""):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", height, width) + data[i + 9:]


def test_headers_give_the_size_of_every_format_opencv_writes(photos):
    rgb = photos[1]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for ext in (".jpg", ".png", ".webp", ".bmp", ".tiff", ".ppm"):
        ok, buf = cv2.imencode(ext, bgr)
        assert ok
        header = probe(buf.tobytes())
        assert (header.width, header.height) == (rgb.shape[1], rgb.shape[0]), ext
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    assert probe(buf.tobytes()).alpha
    with pytest.raises(HeaderError, match="not an image"):
        probe(b"%PDF-1.4 not a picture")


def test_a_header_declaring_too_many_pixels_is_refused_before_decoding(photo_paths):
    # 797 bytes that would decode to 7.5 GB: refused from the header, in no time.
    bomb = png(50_000, 50_000, idat=zlib.compress(b"\0" * 10_000))
    assert len(bomb) < 1000
    with pytest.raises(ImageError, match=r"50000x50000 pixels .* more than the 40 MP limit"):
        decode_image(bomb, "bomb.png")
    big_jpeg = jpeg_with_size(photo_paths[1].read_bytes(), 65_000, 65_000)
    with pytest.raises(ImageError, match="more than the 40 MP limit"):
        decode_image(big_jpeg, "big.jpg")
    # The limit is configurable, and a photo under it still decodes.
    with pytest.raises(ImageError, match="more than the 0.1 MP limit"):
        read_image(photo_paths[1], DecodeLimits(max_pixels=100_000))
    assert read_image(photo_paths[1]).shape == (400, 600, 3)


def test_big_photos_are_shrunk_as_they_are_decoded(tmp_path, photos):
    big = cv2.resize(photos[1], (6000, 4000), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.jpg"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "big.png"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    for name in ("big.jpg", "big.png"):
        rgb = read_image(tmp_path / name)
        assert max(rgb.shape[:2]) == 2048 and rgb.shape[2] == 3, name
        assert abs(float(rgb.mean()) - float(photos[1].mean())) < 3, name  # the same picture, smaller


def test_file_size_is_capped_before_reading(tmp_path, photo_paths):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:  # 4 GiB, sparse: must be refused without being read
        f.write(photo_paths[0].read_bytes())
        f.truncate(4 << 30)
    start = time.perf_counter()
    with pytest.raises(ImageError, match=r"huge.jpg: file is 4096 MB, more than the 64 MB limit"):
        read_image(huge)
    assert time.perf_counter() - start < 1.0


def test_pipes_devices_and_folders_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    result = {}

    def read():
        try:
            read_image(fifo)
        except ImageError as exc:
            result["error"] = str(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "reading a FIFO blocked"
    assert "not a regular file" in result["error"]
    with pytest.raises(ImageError, match="not a regular file"):
        read_image("/dev/zero")
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_damaged_jpeg_data_is_reported_not_described(photo_paths):
    data = bytearray(photo_paths[1].read_bytes())
    data[5000] ^= 0xFF  # one flipped byte in the entropy-coded data: libjpeg warns and goes on
    with pytest.raises(ImageIncomplete, match=INCOMPLETE_MESSAGE):
        decode_image(bytes(data), "flipped.jpg")
    zeroed = bytearray(photo_paths[1].read_bytes())
    zeroed[3000:5000] = bytes(2000)
    with pytest.raises(ImageIncomplete):
        decode_image(bytes(zeroed), "zeroed.jpg")
    with pytest.raises(ImageError, match="truncated|damaged"):
        decode_image(photo_paths[1].read_bytes()[:20000], "cut.jpg")


@pytest.mark.parametrize("ext", [".bmp", ".webp"])
def test_formats_without_checksums_are_checked_against_their_declared_size(photos, ext):
    data = cv2.imencode(ext, cv2.cvtColor(photos[1], cv2.COLOR_RGB2BGR))[1].tobytes()
    assert decode_image(data, "whole" + ext).shape == photos[1].shape
    spliced = data[:len(data) // 2] + data[len(data) // 3:]  # decodes to garbage without complaint
    with pytest.raises(ImageIncomplete, match="header declares"):
        decode_image(spliced, "spliced" + ext)
    with pytest.raises(ImageError):
        decode_image(data[:len(data) // 2], "cut" + ext)


def test_transparency_is_composited_and_a_transparent_image_is_blank(photos):
    hidden = np.dstack([photos[0], np.zeros(photos[0].shape[:2], np.uint8)])  # a photo under zero alpha
    ok, buf = cv2.imencode(".png", cv2.cvtColor(hidden, cv2.COLOR_RGBA2BGRA))
    rgb = decode_image(buf.tobytes(), "transparent.png")
    assert rgb.shape == photos[0].shape and np.all(rgb == 128)
    assert exposure_problem(rgb) == "uniform"
    assert exposure_problem(as_rgb(hidden)) == "uniform"  # frames handed over as RGBA arrays too
    opaque = np.dstack([photos[0], np.full(photos[0].shape[:2], 255, np.uint8)])
    ok, buf = cv2.imencode(".png", cv2.cvtColor(opaque, cv2.COLOR_RGBA2BGRA))
    assert np.array_equal(decode_image(buf.tobytes(), "opaque.png"), photos[0])


def test_file_names_print_on_one_line():
    assert display_name("a\nb.jpg") == "a\\nb.jpg"
    assert display_name(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert display_name("été.jpg") == "été.jpg"
