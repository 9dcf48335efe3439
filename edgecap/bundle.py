"""Model bundles: a folder of ONNX graphs, a tokenizer and a manifest with the sha256 of every file.

The runtime refuses a bundle whose files are missing, altered, or point outside the
folder, and it hands onnxruntime the very bytes it hashed, so nothing can change
between the check and the load.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecap.calibration import CalibrationSpec

FORMAT = "edgecap-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("encoder", "decoder", "tokenizer")


class BundleError(Exception):
    """A model bundle that cannot be used; the message is one line for the user."""


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

    def read_verified(self, role: str) -> bytes:
        """The bytes of one listed file, checked against the manifest's sha256."""
        rel = self.files[role]
        data = _safe_path(self.path, rel).read_bytes()
        expected = self.manifest["sha256"].get(rel)
        if expected is None:
            raise BundleError(f"{self.path}: manifest has no sha256 for {rel}")
        if hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(f"{self.path}: {rel} does not match its sha256 in the manifest "
                              "(file altered or corrupt); re-export or re-install the model")
        return data


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


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model folder {root} does not exist")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not an edgecap model: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path} is not an {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise BundleError(f"{root} needs a newer edgecap (bundle format {manifest['format_version']})")
    try:
        files = dict(manifest["files"])
        missing = [r for r in REQUIRED_FILES if r not in files]
        if missing:
            raise BundleError(f"{manifest_path} lists no {', '.join(missing)} file")
        bundle = Bundle(path=root, name=manifest.get("name", root.name),
                        architecture=Architecture.from_dict(manifest["architecture"]),
                        preprocessing=Preprocessing.from_dict(manifest["preprocessing"]),
                        tokens=TokenSpec.from_dict(manifest["tokens"]),
                        calibration=CalibrationSpec.from_dict(manifest.get("calibration", {})),
                        files=files, manifest=manifest)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{manifest_path} is malformed: {exc!r}") from None
    for rel in manifest.get("sha256", {}):
        _safe_path(root, rel)
    for rel in files.values():
        _safe_path(root, rel)
    if verify:
        for rel, expected in manifest.get("sha256", {}).items():
            if rel in files.values():
                continue  # checked when read, on the bytes actually loaded
            if sha256_file(root / rel) != expected:
                raise BundleError(f"{root}: {rel} does not match its sha256 in the manifest")
    return bundle


REPORTS = "eval"


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Fill in format fields and the sha256 of every model file in the folder, then write.

    Documentation is left out, so it can be rewritten without re-exporting: markdown and
    the evaluation reports under eval/.
    """
    root = Path(root)
    manifest = dict(manifest)
    manifest["format"] = FORMAT
    manifest["format_version"] = FORMAT_VERSION
    manifest["sha256"] = {p.relative_to(root).as_posix(): sha256_file(p)
                          for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST
                          and not p.name.endswith(".md") and p.relative_to(root).parts[0] != REPORTS}
    path = root / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path
