"""Write an edgecap bundle: ONNX graphs + tokenizer + manifest (hashes, provenance, defaults).

Every step that produces or changes a bundle (export, int8, perception, memory, decoder
optimisation, conversion, refresh) ends in `finish_bundle`: the manifest is written with
the hashes of the files now in the folder, and the folder is loaded back as the runtime
would load it, so no step hands out a bundle the runtime refuses.

After changing the files of a bundle on purpose (a new decoder.onnx, an added member),
refresh its manifest hashes, its bundle.sha256 and, for a bundle edgecap ships, the
digest pinned in edgecap/core/shipped_bundles.json, with one command:

    python -m export refresh models/edgecap-base   (or: python -m export.bundle refresh ...)
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from edgecap.core.bundle import MANIFEST, SHIPPED_MODELS, Bundle, Preprocessing, load_bundle, pin_digest, write_manifest
from edgecap.core.calibration import CalibrationSpec

COMPUTED = ("sha256", "format", "format_version")  # written by write_manifest from the folder itself


def finish_bundle(root: Path, manifest: dict[str, Any], pin: bool = False) -> Bundle:
    """The one way a bundle is finished: hash the files now in root, write the manifest and
    bundle.sha256 (a shipped bundle's pinned digest follows; `pin` pins a new one), then load
    the folder as the runtime would, so a bundle it would refuse is never handed out."""
    path = write_manifest(Path(root), {k: v for k, v in manifest.items() if k not in COMPUTED})
    if pin:
        pin_digest(Path(root).resolve().name, hashlib.sha256(path.read_bytes()).hexdigest())
    return load_bundle(root)


def update_manifest(root: Path, **entries: Any) -> Bundle:
    """finish_bundle with `entries` set in the bundle's current manifest."""
    manifest = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    return finish_bundle(root, {**manifest, **entries})


def architecture_from_onnx(encoder: Path, decoder: Path, family: str, max_length: int) -> dict[str, Any]:
    """Read layer/head/visual sizes off the graphs' declared shapes."""
    import onnx  # here, so that `refresh` needs neither onnx nor torch

    from export.onnx_export import count_calibrated_nodes

    enc = onnx.load(str(encoder), load_external_data=False)
    dec = onnx.load(str(decoder), load_external_data=False)

    def dims(graph, name):
        vi = next(v for v in list(graph.input) + list(graph.output) if v.name == name)
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]

    n_layers, _, n_heads, n_visual, head_dim = dims(enc.graph, "cross_k")
    return {"family": family, "n_layers": n_layers, "n_heads": n_heads, "head_dim": head_dim,
            "n_visual": n_visual, "vocab_size": dims(dec.graph, "logits")[-1], "max_length": max_length,
            "pooled_dim": dims(enc.graph, "pooled")[-1],
            "calibrated_attention_nodes": count_calibrated_nodes(dec)}


def write_bundle(out_dir: Path, encoder: Path, decoder: Path, tokenizer_json: str | Path,
                 *, name: str, family: str, max_length: int, preprocessing: Preprocessing,
                 tokens: dict[str, Any], calibration: CalibrationSpec, provenance: dict[str, Any],
                 quantization: dict[str, str], extra: dict[str, Any] | None = None) -> Path:
    """Copy the graphs into out_dir, write tokenizer.json and a hashed manifest, then verify."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, dst in ((encoder, "encoder.onnx"), (decoder, "decoder.onnx")):
        if Path(src).resolve() != (out_dir / dst).resolve():
            shutil.copyfile(src, out_dir / dst)
    from export.optimize import optimize_decoder  # here, so that `refresh` needs neither onnx nor torch

    optimize_decoder(out_dir / "decoder.onnx", out_dir / "decoder.onnx")  # per-layer cache: exact, faster
    tok_path = out_dir / "tokenizer.json"
    if isinstance(tokenizer_json, Path):
        shutil.copyfile(tokenizer_json, tok_path)
    else:
        tok_path.write_text(tokenizer_json, encoding="utf-8")
    manifest = {
        "name": name,
        "architecture": architecture_from_onnx(out_dir / "encoder.onnx", out_dir / "decoder.onnx", family,
                                               max_length),
        "files": {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "tokenizer": "tokenizer.json"},
        "preprocessing": preprocessing.to_dict(),
        "tokens": tokens,
        "calibration": calibration.to_dict(),
        "quantization": quantization,
        "provenance": provenance,
        **(extra or {}),
    }
    finish_bundle(out_dir, manifest)
    return out_dir


def optimize_bundle(bundle_dir: Path) -> dict[str, int | bool]:
    """Rewrite an existing bundle's decoder with export/optimize.py (in place) and store its memory's
    CIDEr-D statistics, then finish the bundle."""
    from edgecap.core.memory import CaptionMemory, MemorySettings
    from export.optimize import optimize_decoder  # here, so that `refresh` needs neither onnx nor torch

    bundle = load_bundle(bundle_dir)
    path = bundle.path / bundle.files["decoder"]
    report = optimize_decoder(path, path)
    quant = dict(bundle.manifest.get("quantization", {}))
    if report["int8_heads"] and "output head" not in quant.get("decoder", ""):
        quant["decoder"] = quant.get("decoder", "") + "; int8 output head, per-layer cache (export/optimize.py)"
    if "memory" in bundle.files:
        memory_path = bundle.path / bundle.files["memory"]
        memory = CaptionMemory.from_bytes(memory_path.read_bytes(),
                                          MemorySettings.from_dict(bundle.manifest.get("memory", {})))
        memory_path.write_bytes(memory.to_bytes())
        report["memory_statistics"] = len(memory.cider.df)
    update_manifest(bundle.path, quantization=quant)
    return report


def refresh_bundle(root: Path, pin: bool | None = None) -> str:
    """Rewrite a bundle's manifest hashes and bundle.sha256 from the files now in it, check that
    it loads, and pin its digest when it is a bundle in edgecap's models/ folder (or `pin`).
    Returns the manifest digest."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    return finish_bundle(root, manifest, pin=pin if pin is not None else root.resolve().parent == SHIPPED_MODELS).digest


if __name__ == "__main__":  # the older spelling of `python -m export refresh DIR`
    import runpy
    import sys

    sys.argv[0] = "python -m export"
    runpy.run_module("export", run_name="__main__", alter_sys=True)
