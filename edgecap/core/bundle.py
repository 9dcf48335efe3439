"""Model bundles: a folder of ONNX graphs, a tokenizer and a manifest with the sha256 of every file.

The runtime refuses a bundle whose files are missing, altered, too big, or point outside
the folder, and it hands onnxruntime the very bytes it hashed (external weight files
included), so nothing can change between the check and the load. The manifest itself is
protected by `bundle.sha256` (its digest, next to it) and, for the bundles edgecap
ships, by the digest pinned in edgecap/core/shipped_bundles.json; `edgecap info` prints the
digest of any bundle so its owner can compare it. After changing a shipped bundle on
purpose, refresh all three with:

    python -m export.bundle refresh models/edgecap-base
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecap.core.calibration import CalibrationSpec
from edgecap.core.manifest_schema import SchemaError, check_manifest
from edgecap.core.onnx_external import OnnxFormatError, external_locations

FORMAT = "edgecap-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "bundle.sha256"  # "<sha256 of manifest.json>  manifest.json"
REQUIRED_FILES = ("encoder", "decoder", "tokenizer")
PINS = Path(__file__).with_name("shipped_bundles.json")  # {bundle name: manifest digest}
SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "models"
REPORTS = "eval"

# Size limits, checked before a byte is hashed or parsed.
MAX_MANIFEST_BYTES = 1 << 20
MEMBER_LIMITS = {".onnx": 1 << 30, ".json": 16 << 20, ".npz": 64 << 20}
OTHER_MEMBER_LIMIT = 2 << 30  # external weight files
MAX_NPZ_UNPACKED = 256 << 20


class BundleError(Exception):
    """A model bundle that cannot be used; the message is one line for the user."""


class GraphBytes(bytes):
    """An ONNX graph's verified bytes, with the verified bytes of the external data files it
    refers to (`external`: location -> bytes); edgecap.core.providers hands both to onnxruntime."""

    external: dict[str, bytes]
    source: str  # bundle path / file name, for error messages


@dataclass(frozen=True)
class Preprocessing:
    """pixels = (resize(rgb) * rescale - mean) / std, channels first."""

    image_size: tuple[int, int] = (224, 224)  # height, width
    resize: str = "squash"  # squash | center_crop
    rescale: float = 1.0
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        return cls(image_size=tuple(d["image_size"]), resize=d.get("resize", "squash"),
                   rescale=float(d.get("rescale", 1.0)), mean=tuple(d["mean"]), std=tuple(d["std"]))

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size), "resize": self.resize, "rescale": self.rescale,
                "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class Architecture:
    family: str
    n_layers: int
    n_heads: int
    head_dim: int
    n_visual: int
    vocab_size: int
    max_length: int
    pooled_dim: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Architecture":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TokenSpec:
    bos_id: int
    eos_id: int
    pad_id: int
    prompt_ids: tuple[int, ...]
    suppress_ids: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenSpec":
        return cls(bos_id=d["bos_id"], eos_id=d["eos_id"], pad_id=d["pad_id"], prompt_ids=tuple(d["prompt_ids"]),
                   suppress_ids=tuple(d.get("suppress_ids", ())))


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    architecture: Architecture
    preprocessing: Preprocessing
    tokens: TokenSpec
    calibration: CalibrationSpec
    files: dict[str, str]
    manifest: dict[str, Any] = field(repr=False)
    digest: str = ""  # sha256 of manifest.json
    shipped: bool = False  # a bundle edgecap ships, matching its pinned digest

    def read_verified(self, role: str) -> bytes:
        """The bytes of one listed file, checked against the manifest's sha256 (and, for a
        graph, with its external data files read the same way: see GraphBytes)."""
        rel = self.files[role]
        data = self.read_member(rel)
        if rel.endswith(".onnx"):
            return self._graph(rel, data)
        if role == "tokenizer":
            self._check_tokenizer(rel, data)
        if rel.endswith(".npz"):
            _check_npz(self.path, rel, data)
        return data

    def read_member(self, rel: str) -> bytes:
        expected = self.manifest["sha256"].get(rel)
        if expected is None:
            raise BundleError(f"{self.path}: manifest has no sha256 for {rel}")
        data = _read_capped(_safe_path(self.path, rel), member_limit(rel), f"{self.path}: {rel}")
        if hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(f"{self.path}: {rel} does not match its sha256 in the manifest "
                              "(file altered or corrupt); re-export or re-install the model")
        return data

    def _graph(self, rel: str, data: bytes) -> GraphBytes:
        try:
            locations = external_locations(data)
        except OnnxFormatError as exc:
            raise BundleError(f"{self.path}: {rel} is not a valid ONNX graph ({exc})") from None
        graph = GraphBytes(data)
        graph.external, graph.source = {}, str(self.path / rel)
        for location in sorted(locations):
            if location not in self.manifest["sha256"]:
                raise BundleError(f"{self.path}: {rel} refers to external data {location!r}, which is not a "
                                  "hashed file of the bundle")
            graph.external[location] = self.read_member(location)
        return graph

    def _check_tokenizer(self, rel: str, data: bytes) -> None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise BundleError(f"{self.path}: {rel} is not a valid tokenizer ({first})") from None
        vocab = self.architecture.vocab_size
        if tokenizer.get_vocab_size() != vocab:
            raise BundleError(f"{self.path}: {rel} has {tokenizer.get_vocab_size()} tokens, the model {vocab}")
        t = self.tokens
        special = {t.bos_id, t.eos_id, t.pad_id, *t.suppress_ids}
        words = [i for i in range(vocab) if i not in special][:256]
        if not tokenizer.decode(words, skip_special_tokens=True).strip():
            raise BundleError(f"{self.path}: {rel} turns the model's words into empty text")


def member_limit(rel: str) -> int:
    return MEMBER_LIMITS.get(Path(rel).suffix.lower(), OTHER_MEMBER_LIMIT)


def _check_npz(root: Path, rel: str, data: bytes) -> None:
    """An .npz is a zip: 1 MB can unpack to gigabytes. Sizes are read from its directory first."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            unpacked = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleError(f"{root}: {rel} is not a valid .npz file ({exc})") from None
    if unpacked > MAX_NPZ_UNPACKED:
        raise BundleError(f"{root}: {rel} unpacks to {unpacked >> 20} MB, more than the "
                          f"{MAX_NPZ_UNPACKED >> 20} MB limit")


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """An .npz for a bundle: numbers stored as they are (weights and features barely deflate, 7-10%,
    and inflating them cost 10-15 ms at every load), text and integer tables deflated; a fixed
    date, so the same arrays give the same bytes (and hash) at every export."""
    import numpy as np  # bundle.py itself loads without numpy

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, value in arrays.items():
            array = np.asanyarray(value)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if array.dtype.kind == "f" or array.dtype == np.int8 \
                else zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buf.getvalue()


def _read_capped(path: Path, limit: int, label: str) -> bytes:
    """A regular file of at most `limit` bytes (checked before reading, and while reading)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BundleError(f"{label}: cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{label}: not a regular file")
        if st.st_size > limit:
            raise BundleError(f"{label} is {st.st_size >> 20} MB, more than the {limit >> 20} MB limit")
        # Usually the whole file in one read, straight into the bytes returned (no chunks to join:
        # a second copy of a graph costs page faults at load); the byte asked beyond its size, and
        # the reads after, notice a file that grew since fstat.
        chunks = [f.read(min(st.st_size, limit) + 1)]
        total = len(chunks[0])
        while total <= limit and (chunk := f.read(min(1 << 20, limit + 1 - total))):
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise BundleError(f"{label} is more than the {limit >> 20} MB limit")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_path(root: Path, rel: str) -> Path:
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise BundleError(f"{root}: file path {rel!r} in the manifest leaves the bundle")
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise BundleError(f"{root}: file path {rel!r} in the manifest leaves the bundle")
    if not path.is_file():
        raise BundleError(f"{root}: {rel} is missing (incomplete bundle)")
    return path


def hashed_members(root: Path) -> list[str]:
    """Every file of a bundle folder that its manifest must hash: all but the manifest, its
    digest, hidden files, markdown and the evaluation reports under eval/."""
    root = Path(root)
    members = []
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        if (p.is_file() and p.name not in (MANIFEST, MANIFEST_DIGEST) and not p.name.endswith(".md")
                and not any(part.startswith(".") for part in parts) and parts[0] != REPORTS):
            members.append(p.relative_to(root).as_posix())
    return members


def pinned_digests() -> dict[str, str]:
    try:
        pins = json.loads(PINS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return pins if isinstance(pins, dict) else {}


def is_shipped_folder(root: Path) -> bool:
    """A folder in the models/ directory that comes with edgecap, named in the pin file."""
    root = Path(root).resolve()
    return root.parent == SHIPPED_MODELS and root.name in pinned_digests()


def _check_digest(root: Path, raw: bytes) -> tuple[str, bool]:
    digest = hashlib.sha256(raw).hexdigest()
    digest_path = root / MANIFEST_DIGEST
    if not digest_path.is_file():
        raise BundleError(f"{root}: {MANIFEST_DIGEST} is missing, so {MANIFEST} cannot be checked; re-export "
                          f"the bundle (or, if you made it, run python -m export.bundle refresh {root})")
    recorded = _read_capped(digest_path, 4096, f"{root}: {MANIFEST_DIGEST}").decode("ascii", "replace").split()
    if not recorded or recorded[0] != digest:
        raise BundleError(f"{root}: {MANIFEST} does not match {MANIFEST_DIGEST} (manifest edited or corrupt); "
                          "re-export or re-install the model")
    shipped = is_shipped_folder(root)
    if shipped and pinned_digests()[Path(root).resolve().name] != digest:
        raise BundleError(f"{root}: {MANIFEST} is not the one this edgecap ships (sha256 {digest[:16]}...); "
                          "re-install the model")
    return digest, shipped


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model folder {root} does not exist")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not an edgecap model: {MANIFEST} is missing")
    raw = _read_capped(manifest_path, MAX_MANIFEST_BYTES, str(manifest_path))
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BundleError(f"{manifest_path} is nested too deeply") from None
    try:
        check_manifest(manifest, FORMAT, FORMAT_VERSION)
    except SchemaError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from None
    files = dict(manifest["files"])
    missing = [r for r in REQUIRED_FILES if r not in files]
    if missing:
        raise BundleError(f"{manifest_path} lists no {', '.join(missing)} file")
    for rel in [*manifest["sha256"], *files.values()]:
        _safe_path(root, rel)
    unhashed = [rel for rel in files.values() if rel not in manifest["sha256"]]
    if unhashed:
        raise BundleError(f"{manifest_path}: {unhashed[0]} has no sha256")
    unlisted = [rel for rel in hashed_members(root) if rel not in manifest["sha256"]]
    if unlisted:
        raise BundleError(f"{root}: {unlisted[0]} is in the bundle folder but not in its manifest "
                          "(a file added, or the manifest edited)")
    digest, shipped = _check_digest(root, raw)
    try:
        bundle = Bundle(path=root, name=manifest.get("name", root.name),
                        architecture=Architecture.from_dict(manifest["architecture"]),
                        preprocessing=Preprocessing.from_dict(manifest["preprocessing"]),
                        tokens=TokenSpec.from_dict(manifest["tokens"]),
                        calibration=CalibrationSpec.from_dict(manifest.get("calibration", {})),
                        files=files, manifest=manifest, digest=digest, shipped=shipped)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{manifest_path} is malformed: {exc!r}") from None
    if verify:
        for rel in manifest["sha256"]:
            if rel not in files.values():  # listed files are checked when read, on the bytes loaded
                bundle.read_member(rel)
    return bundle


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Fill in format fields and the sha256 of every model file in the folder, then write the
    manifest and its digest (bundle.sha256); a shipped bundle's pinned digest follows.

    Documentation is left out, so it can be rewritten without re-exporting: markdown and
    the evaluation reports under eval/.
    """
    root = Path(root)
    manifest = dict(manifest)
    manifest["format"] = FORMAT
    manifest["format_version"] = FORMAT_VERSION
    manifest["sha256"] = {rel: sha256_file(root / rel) for rel in hashed_members(root)}
    path = root / MANIFEST
    raw = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    path.write_bytes(raw)
    digest = hashlib.sha256(raw).hexdigest()
    (root / MANIFEST_DIGEST).write_text(f"{digest}  {MANIFEST}\n", encoding="ascii")
    if is_shipped_folder(root):
        pin_digest(root.resolve().name, digest)
    return path


def pin_digest(name: str, digest: str) -> None:
    """Record `digest` as the manifest of the shipped bundle `name` (edgecap/core/shipped_bundles.json)."""
    pins = pinned_digests()
    pins[name] = digest
    PINS.write_text(json.dumps(dict(sorted(pins.items())), indent=2) + "\n", encoding="utf-8")
