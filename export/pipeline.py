"""Captioner checkpoint -> fp32 bundle -> int8 bundle."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from edgecap.core.bundle import Preprocessing
from edgecap.core.calibration import CalibrationSpec
from export.bundle import write_bundle
from export.efficientnet import LITE_PREPROCESSING
from export.model import Captioner, CaptionerConfig
from export.onnx_export import export_captioner
from export.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID



def preprocessing_for(cfg: CaptionerConfig) -> Preprocessing:
    # Squash, not crop: most training photos were distributed already squashed to a
    # square, so the runtime squashes too and sees the same geometry.
    return Preprocessing(image_size=(cfg.image_size, cfg.image_size), **LITE_PREPROCESSING)


def save_checkpoint(path: Path, model: Captioner, tokenizer_json: str, calibration: CalibrationSpec,
                    provenance: dict[str, Any]) -> None:
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), "tokenizer": tokenizer_json,
                "calibration": calibration.to_dict(), "provenance": provenance}, path)


def load_checkpoint(path: Path) -> tuple[Captioner, str, CalibrationSpec, dict[str, Any]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = Captioner(CaptionerConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["tokenizer"], CalibrationSpec.from_dict(ckpt["calibration"]), ckpt["provenance"]


def chosen_spec(report_path: Path) -> CalibrationSpec:
    """The SPARC setting a sweep report (export/sweep.py) chose."""
    report = json.loads(Path(report_path).read_text())
    return CalibrationSpec.from_dict(report["chosen"]["setting"])


def export_bundle(model: Captioner, tokenizer_json: str, out_dir: Path, *, name: str,
                  calibration: CalibrationSpec, provenance: dict[str, Any]) -> Path:
    cfg = model.cfg
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_captioner(model, Path(tmp))
        return write_bundle(
            out_dir, paths["encoder"], paths["decoder"], tokenizer_json, name=name, family="edgecap-cross",
            max_length=cfg.max_len, preprocessing=preprocessing_for(cfg),
            tokens={"bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID, "prompt_ids": [BOS_ID],
                    "suppress_ids": [PAD_ID, BOS_ID, UNK_ID]},
            calibration=calibration, provenance=provenance,
            quantization={"encoder": "fp32", "decoder": "fp32"},
            extra={"config": cfg.to_dict()})


def bundle_checkpoint(checkpoint: Path, out: Path, data: Path, *, name: str, int8: bool = False,
                      calibration_report: Path | None = None, calibration: str | None = None,
                      keep_fp32: Path | None = None) -> Path:
    """A checkpoint of export.model.Captioner as a bundle at out: fp32, or int8 through
    export.quantize.quantize_verified (calibrated on unlabelled photos, checked on val).

    The SPARC setting is the checkpoint's, else the sweep report's choice, with
    `calibration` overrides (alpha=1.2,tau=2) on top.
    """
    from export.data import calibration_images, parity_images
    from export.quantize import quantize_verified

    model, tokenizer_json, spec, provenance = load_checkpoint(checkpoint)
    if calibration_report:
        spec = chosen_spec(calibration_report)
        provenance["calibration_sweep"] = json.loads(Path(calibration_report).read_text())["chosen"]
    if calibration:
        spec = spec.with_overrides(calibration)
    out = Path(out)
    if not int8:
        if out.exists():
            shutil.rmtree(out)
        return export_bundle(model, tokenizer_json, out, name=name, calibration=spec, provenance=provenance)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir = export_bundle(model, tokenizer_json, Path(tmp) / "fp32", name=name, calibration=spec,
                                 provenance=provenance)
        if out.exists():
            for child in out.iterdir():  # keep a hand-written MODEL_CARD.md
                if child.suffix != ".md":
                    child.unlink() if child.is_file() else shutil.rmtree(child)
        quantize_verified(fp32_dir, out, calibration_images(data), parity_images(data))
        if keep_fp32:
            shutil.copytree(fp32_dir, keep_fp32, dirs_exist_ok=True)
    return out
