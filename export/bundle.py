"""Write an edgecap bundle: ONNX graphs + tokenizer + manifest (hashes, provenance, defaults).

After changing the files of a bundle on purpose (a new decoder.onnx, an added member),
refresh its manifest hashes, its bundle.sha256 and, for a bundle edgecap ships, the
digest pinned in edgecap/shipped_bundles.json, with one command:

    python -m export.bundle refresh models/edgecap-base
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from edgecap.bundle import (MANIFEST, SHIPPED_MODELS, BundleError, Preprocessing, load_bundle, pin_digest,
                            write_manifest)
from edgecap.calibration import CalibrationSpec


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


def refresh_bundle(root: Path, pin: bool | None = None) -> str:
    """Rewrite a bundle's manifest hashes and bundle.sha256 from the files now in it, check that
    it loads, and pin its digest when it is a bundle in edgecap's models/ folder (or `pin`).
    Returns the manifest digest."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    manifest.pop("sha256", None)
    write_manifest(root, manifest)
    if pin if pin is not None else root.resolve().parent == SHIPPED_MODELS:
        digest = hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()
        pin_digest(root.resolve().name, digest)
    return load_bundle(root).digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.bundle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("refresh", help="re-hash a bundle's files, rewrite manifest.json and bundle.sha256, "
                                        "and pin the digest of a shipped bundle")
    p.add_argument("bundle", type=Path)
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None,
                   help="pin the digest in edgecap/shipped_bundles.json (default: for folders in models/)")
    args = parser.parse_args(argv)
    try:
        digest = refresh_bundle(args.bundle, args.pin)
    except (BundleError, OSError, ValueError) as exc:
        print(f"python -m export.bundle: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.bundle}: manifest sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
