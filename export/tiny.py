"""A tiny random-weight captioner and bundle for tests (like piper's test voice): no downloads."""
from __future__ import annotations

from pathlib import Path

import torch

from edgecap.core.calibration import CalibrationSpec
from export.model import Captioner, CaptionerConfig
from export.pipeline import export_bundle
from export.tokenizer import build_word_tokenizer

TINY_TEXT = """a dog runs through the grass . two children play on a beach near the water .
a man in a red shirt rides a bike down the street . a black and white cat sits on a sofa .
a woman holds a cup of coffee at a wooden table . people walk along a busy city street at night .
a rocket launches into a blue sky with smoke . a girl in a pink dress jumps into a pool ."""


def tiny_config(vocab_size: int) -> CaptionerConfig:
    return CaptionerConfig(vocab_size=vocab_size, encoder="tiny", image_size=64, d_model=48, n_layers=2,
                           n_heads=4, d_ff=96, max_len=24, dropout=0.0)


def build_tiny_captioner(seed: int = 0) -> tuple[Captioner, str]:
    """Random weights, scaled up so that greedy decoding wanders over the vocabulary
    and attention is peaked enough for SPARC to select tokens (a 0.02-std init gives
    near-uniform attention and one repeated word)."""
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(TINY_TEXT.splitlines())
    model = Captioner(tiny_config(tokenizer.get_vocab_size()))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.35 if "cross_kv" in name or "cross_q" in name else 0.2)
    return model.eval(), tokenizer.to_str()


def build_tiny_bundle(out_dir: Path, seed: int = 0, calibration: CalibrationSpec | None = None
                      ) -> tuple[Captioner, Path]:
    model, tokenizer_json = build_tiny_captioner(seed)
    calibration = calibration or CalibrationSpec(alpha=1.5, beta=0.1, tau=0.5)
    path = export_bundle(model, tokenizer_json, Path(out_dir), name="edgecap-tiny-test", calibration=calibration,
                         provenance={"weights": "random (seed %d), for tests only" % seed, "data": "none"})
    return model, path
