"""Alt text next to each photo: an XMP sidecar (`IMG_1.jpg.xmp`) or a plain `IMG_1.jpg.txt`.

The XMP carries the text as `dc:description` (what digiKam, darktable, Lightroom and exiftool
show as the caption) and as IPTC `AltTextAccessibility` (the field for screen-reader alt text).
A sidecar that already exists (darktable keeps its edit history in one) is updated in place:
only those two properties change, everything else in it is kept.
"""
from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from edgecap import __version__

SIDECAR_KINDS = ("xmp", "txt", "none")
X = "adobe:ns:meta/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
XMP = "http://ns.adobe.com/xap/1.0/"
IPTC = "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
PREFIXES = {"x": X, "rdf": RDF, "dc": DC, "xmp": XMP, "Iptc4xmpCore": IPTC}


class SidecarError(Exception):
    """A sidecar that cannot be written or updated; the message names the file."""


def sidecar_path(photo: str | Path, kind: str) -> Path:
    return Path(f"{photo}.{kind}")


def write_sidecar(photo: str | Path, kind: str, text: str) -> Path | None:
    """Write (or update) the sidecar of `photo`; None when kind is 'none'."""
    if kind == "none":
        return None
    if kind not in SIDECAR_KINDS:
        raise ValueError(f"unknown sidecar kind {kind!r} (choose from {', '.join(SIDECAR_KINDS)})")
    path = sidecar_path(photo, kind)
    if kind == "txt":
        _atomic_write(path, (text + "\n").encode("utf-8"))
    elif path.exists():
        _atomic_write(path, _updated_xmp(path, text))
    else:
        _atomic_write(path, new_xmp(text))
    return path


def new_xmp(text: str) -> bytes:
    for prefix, uri in PREFIXES.items():
        ET.register_namespace(prefix, uri)
    meta = ET.Element(f"{{{X}}}xmpmeta", {f"{{{X}}}xmptk": f"edgecap {__version__}"})
    rdf = ET.SubElement(meta, f"{{{RDF}}}RDF")
    description = ET.SubElement(rdf, f"{{{RDF}}}Description", {f"{{{RDF}}}about": ""})
    _set_description(description, text)
    return _serialise(meta)


def read_description(path: str | Path) -> str | None:
    """The x-default `dc:description` of an XMP sidecar (None when it has none)."""
    root = ET.parse(path).getroot()
    for node in root.iter(f"{{{DC}}}description"):
        for li in node.iter(f"{{{RDF}}}li"):
            if li.get(XML_LANG, "x-default") == "x-default":
                return li.text or ""
    return None


def _updated_xmp(path: Path, text: str) -> bytes:
    try:
        for _, (prefix, uri) in ET.iterparse(path, events=["start-ns"]):
            ET.register_namespace(prefix, uri)  # keep the file's own prefixes on writing back
        root = ET.parse(path).getroot()
    except (ET.ParseError, ValueError) as exc:
        raise SidecarError(f"{path}: existing sidecar is not valid XMP ({exc}); left as it is") from None
    description = root.find(f".//{{{RDF}}}Description")
    if description is None:
        raise SidecarError(f"{path}: existing sidecar has no rdf:Description; left as it is")
    _set_description(description, text)
    return _serialise(root)


def _set_description(description: ET.Element, text: str) -> None:
    """Replace dc:description and Iptc4xmpCore:AltTextAccessibility with one x-default entry."""
    for uri, name in ((DC, "description"), (IPTC, "AltTextAccessibility")):
        tag = f"{{{uri}}}{name}"
        description.attrib.pop(tag, None)
        for old in description.findall(tag):
            description.remove(old)
        alt = ET.SubElement(ET.SubElement(description, tag), f"{{{RDF}}}Alt")
        ET.SubElement(alt, f"{{{RDF}}}li", {XML_LANG: "x-default"}).text = text
    tool = f"{{{XMP}}}CreatorTool"
    if description.find(tool) is None and tool not in description.attrib:
        ET.SubElement(description, tool).text = f"edgecap {__version__}"


def _serialise(root: ET.Element) -> bytes:
    ET.indent(root, space=" ")
    buffer = io.BytesIO()
    buffer.write('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'.encode("utf-8"))
    ET.ElementTree(root).write(buffer, encoding="utf-8", xml_declaration=False)
    buffer.write(b'\n<?xpacket end="w"?>\n')
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write beside, then rename: a kill never leaves half a sidecar."""
    tmp = path.with_name(path.name + ".edgecap-tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SidecarError(f"{path}: cannot write sidecar ({exc.strerror or exc})") from None
