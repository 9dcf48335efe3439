"""Captioner checkpoint -> fp32 bundle -> int8 bundle."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from edgecap.bundle import Preprocessing
from edgecap.calibration import CalibrationSpec
from export.bundle import write_bundle
from export.model import Captioner, CaptionerConfig
from export.onnx_export import export_captioner
from export.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

LITE_PREPROCESSING = dict(resize="squash", rescale=1.0, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))


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
