"""Write an edgecap bundle: ONNX graphs + tokenizer + manifest (hashes, provenance, defaults)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import onnx

from edgecap.bundle import Preprocessing, load_bundle, write_manifest
from edgecap.calibration import CalibrationSpec
from export.onnx_export import count_calibrated_nodes
from export.optimize import optimize_decoder


def architecture_from_onnx(encoder: Path, decoder: Path, family: str, max_length: int) -> dict[str, Any]:
    """Read layer/head/visual sizes off the graphs' declared shapes."""
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
    write_manifest(out_dir, manifest)
    load_bundle(out_dir)  # refuse to hand out a bundle the runtime would refuse
    return out_dir
