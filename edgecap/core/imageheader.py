"""Width and height of an image from its header, read before anything is decoded.

A 797-byte PNG can declare 50,000 x 50,000 pixels; decoding it first and looking after
is an out-of-memory kill on a small board. Only the formats edgecap reads are parsed;
anything else is refused, so no decoder ever sees a file whose size is unknown.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF, GIF or PNM"


class HeaderError(ValueError):
    """The header is damaged or the format is not one edgecap reads (message: one phrase)."""


@dataclass(frozen=True)
class Header:
    format: str
    width: int
    height: int
    alpha: bool = False  # the decoder may hand back a transparency channel
    sample_bytes: int = 1  # 2 for 16-bit images, which keep their depth when decoded with alpha
    file_size: int | None = None  # what the container says the whole file takes, where it says so

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """What the decoded picture takes in memory (8-bit colour, or the alpha path's depth)."""
        return self.pixels * (4 * self.sample_bytes if self.alpha else 3)


def probe(data: bytes | memoryview) -> Header:
    view = memoryview(data)
    head = bytes(view[:1 << 16])
    for magic, parse in _PARSERS:
        if head.startswith(magic):
            try:
                header = parse(view if parse is _tiff else head)  # a TIFF directory may sit at the end
            except (struct.error, IndexError, ValueError) as exc:
                if isinstance(exc, HeaderError):
                    raise
                raise HeaderError("damaged image header") from None
            if header.width <= 0 or header.height <= 0:
                raise HeaderError(f"damaged {header.format} header ({header.width}x{header.height} pixels)")
            return header
    raise HeaderError(f"not an image edgecap can read ({SUPPORTED})")


def _jpeg(d: bytes) -> Header:
    i = 2
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            raise HeaderError("damaged JPEG header")
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack_from(">H", d, i + 2)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack_from(">HH", d, i + 5)
            return Header("JPEG", w, h)
        if marker in (0xDA, 0xD9) or length < 2:
            break
        i += 2 + length
    raise HeaderError("damaged JPEG header (no frame size before the image data)")


def _png(d: bytes) -> Header:
    if d[12:16] != b"IHDR":
        raise HeaderError("damaged PNG header")
    w, h, depth, colour = struct.unpack_from(">IIBB", d, 16)
    alpha = colour in (4, 6)
    i = 8
    while not alpha and i + 8 <= len(d):  # a tRNS chunk before the pixels also means transparency
        length, kind = struct.unpack_from(">I4s", d, i)
        if kind == b"IDAT":
            break
        alpha = kind == b"tRNS"
        i += 12 + length
    return Header("PNG", w, h, alpha, 2 if depth == 16 else 1)


def _bmp(d: bytes) -> Header:
    offset, size = struct.unpack_from("<II", d, 10)
    if size == 12:
        w, h, _, bits = struct.unpack_from("<hhHH", d, 18)
        compression = 0
    else:
        w, h, _, bits, compression = struct.unpack_from("<iiHHI", d, 18)
    expected = None
    if compression in (0, 3) and bits in (1, 4, 8, 16, 24, 32):  # uncompressed: rows of known length
        expected = offset + (w * bits + 31) // 32 * 4 * abs(h)
    return Header("BMP", w, abs(h), file_size=expected)  # 32-bit BMPs often carry an unused, all-zero alpha


def _riff_size(d: bytes) -> int:
    size = struct.unpack_from("<I", d, 4)[0] + 8
    return size + (size & 1)


def _webp(d: bytes) -> Header:
    if d[8:12] != b"WEBP":
        raise HeaderError("not an image edgecap can read (RIFF but not WebP)")
    kind = d[12:16]
    if kind == b"VP8 ":
        w, h = struct.unpack_from("<HH", d, 26)
        return Header("WebP", w & 0x3FFF, h & 0x3FFF, file_size=_riff_size(d))
    if kind == b"VP8L":
        bits = struct.unpack_from("<I", d, 21)[0]
        return Header("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1),
                      file_size=_riff_size(d))
    if kind == b"VP8X":
        flags = d[20]
        w = int.from_bytes(d[24:27], "little") + 1
        h = int.from_bytes(d[27:30], "little") + 1
        return Header("WebP", w, h, bool(flags & 0x10), file_size=_riff_size(d))
    raise HeaderError("damaged WebP header")


def _tiff(d: bytes) -> Header:
    order = "<" if bytes(d[:2]) == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", d, 4)
    if offset + 2 > len(d):
        raise HeaderError("TIFF directory is not near the start of the file (not supported)")
    (count,) = struct.unpack_from(order + "H", d, offset)
    tags: dict[int, int] = {}
    for k in range(count):
        tag, kind, n = struct.unpack_from(order + "HHI", d, offset + 2 + 12 * k)
        if kind == 3:
            value = struct.unpack_from(order + "H", d, offset + 2 + 12 * k + 8)[0]
        elif kind == 4:
            value = struct.unpack_from(order + "I", d, offset + 2 + 12 * k + 8)[0]
        else:
            continue
        tags.setdefault(tag, value)
    if 256 not in tags or 257 not in tags:
        raise HeaderError("damaged TIFF header (no image size)")
    return Header("TIFF", tags[256], tags[257], 338 in tags, max(1, min(8, tags.get(258, 8) // 8)))


def _gif(d: bytes) -> Header:
    w, h = struct.unpack_from("<HH", d, 6)
    return Header("GIF", w, h)


def _pnm(d: bytes) -> Header:
    words: list[bytes] = []
    for line in d[2:4096].splitlines():
        words += line.split(b"#", 1)[0].split()
        if len(words) >= 2:
            break
    if len(words) < 2 or not (words[0].isdigit() and words[1].isdigit()):
        raise HeaderError("damaged PNM header")
    return Header("PNM", int(words[0]), int(words[1]))


_PARSERS = (
    (b"\xff\xd8\xff", _jpeg),
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"BM", _bmp),
    (b"RIFF", _webp),
    (b"II*\x00", _tiff),
    (b"MM\x00*", _tiff),
    (b"GIF87a", _gif),
    (b"GIF89a", _gif),
    *((b"P%d" % n, _pnm) for n in range(1, 7)),
)
