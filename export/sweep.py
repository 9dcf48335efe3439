"""Tune SPARC (alpha, beta, tau, selection layer) on the val split, through the shipped decode loop.

The captions come from edgecap.core.decoding with the options a bundle ships (the `brief`
preset: beam 3, no repeated trigrams; greedy with `--decoding greedy`): from a torch
checkpoint through export.torch_decoder on cached backbone features, or from a bundle
through the edgecap runtime itself, its memory reranking included when it has one.
Each setting is scored with CIDEr-D, CHAIR_i and object F1 (export/scoring.py). The
chosen setting is the one with the fewest hallucinated objects among those that keep
object F1 and CIDEr at least as high as calibration off (within a small tolerance); if
none qualifies, calibration stays at the reference defaults and the report says so.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgecap.core.calibration import CalibrationSpec
from edgecap.core.decoding import DecodingOptions, preset
from export.data import DEFAULT_DATA, feature_cache, load_records
from export.scoring import rounded, score

log = logging.getLogger(__name__)
F1_TOLERANCE = 0.002
CIDER_TOLERANCE = 0.01
DECODINGS = {"brief": preset("brief"), "greedy": DecodingOptions(beam_size=1, min_length=0, max_length=20,
                                                                 rerank=False)}


def grid(n_layers: int) -> list[CalibrationSpec | None]:
    settings: list[CalibrationSpec | None] = [None]
    for alpha in (1.1, 1.2, 1.35):
        for tau in (1.0, 1.5, 2.5):
            settings.append(CalibrationSpec(alpha=alpha, beta=0.1, tau=tau))
    for layer in range(n_layers - 1):
        settings.append(CalibrationSpec(selection_layer=layer))
    settings.append(CalibrationSpec(beta=0.5))
    return settings


def choose(results: list[dict]) -> dict:
    off = next(r for r in results if r["setting"] == "off")
    ok = [r for r in results if r["setting"] != "off"
          and (r["object_f1"] or 0) >= (off["object_f1"] or 0) - F1_TOLERANCE
          and r["cider"] >= off["cider"] - CIDER_TOLERANCE]
    if not ok:
        return {"setting": CalibrationSpec().to_dict(), "reason": "no setting kept F1 and CIDEr; defaults"}
    best = min(ok, key=lambda r: ((r["chair_i"] or 0), -r["cider"]))
    return {"setting": best["setting"], "reason": "fewest hallucinated objects with F1 and CIDEr kept"}


class CheckpointCaptions:
    """A torch checkpoint's captions of the first n val photos, from cached backbone features."""

    def __init__(self, checkpoint: Path, n_images: int, options: DecodingOptions, data_dir: Path, cache_dir: Path):
        import torch
        from tokenizers import Tokenizer

        from export.pipeline import load_checkpoint

        self.model, tokenizer_json, _, _ = load_checkpoint(checkpoint)
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        cfg = self.model.cfg
        records, feats = feature_cache(cfg.encoder, cfg.image_size, "val", False, data_dir, cache_dir)
        self.grid = torch.from_numpy(np.asarray(feats[:n_images]))
        self.references = [r.captions for r in records[:n_images]]
        self.n_layers = cfg.n_layers
        self.options = replace(options, rerank=False)  # a checkpoint has no memory to rerank with
        self.rerank = False

    def __call__(self, spec: CalibrationSpec | None) -> list[str]:
        from export.torch_decoder import caption_tokens

        return [self.tokenizer.decode(t) for t in caption_tokens(self.model, self.grid, spec, self.options)]


class BundleCaptions:
    """A bundle's captions of the first n val photos, by the edgecap runtime (what ships)."""

    def __init__(self, bundle_dir: Path, n_images: int, options: DecodingOptions, data_dir: Path,
                 threads: int | None = None):
        from edgecap.core.image import read_image
        from edgecap.core.model import OnnxCaptioner, VisualFeatures

        self.captioner = OnnxCaptioner.load(bundle_dir, provider="cpu", threads=threads)
        records = load_records(data_dir, split="val")[:n_images]
        self.references = [r.captions for r in records]
        self.features = VisualFeatures.concat([self.captioner.encode([read_image(r.path) for r in records[i:i + 32]])
                                               for i in range(0, len(records), 32)])
        self.n_layers = self.captioner.arch.n_layers
        self.options = options
        self.rerank = options.rerank and self.captioner.memory is not None

    def __call__(self, spec: CalibrationSpec | None) -> list[str]:
        options = replace(self.options, calibrate=spec is not None, calibration=spec)
        return [r.caption for r in self.captioner.caption_features(self.features, options)]


def sweep(source: Path, out: Path, n_images: int = 600, data_dir: Path = DEFAULT_DATA,
          cache_dir: Path = Path("cache"), decoding: str = "brief", threads: int | None = None) -> dict:
    """Score every grid setting on the first n_images val photos; source is a checkpoint (.pt) or a bundle."""
    options = DECODINGS[decoding]
    if Path(source).is_dir():
        captions = BundleCaptions(source, n_images, options, data_dir, threads)
    else:
        captions = CheckpointCaptions(source, n_images, options, data_dir, cache_dir)
    synonyms = data_dir / "chair" / "synonyms.txt"
    results = []
    for spec in grid(captions.n_layers):
        start = time.time()
        metrics = score(captions(spec), captions.references, synonyms if synonyms.exists() else None)
        results.append({"setting": spec.to_dict() if spec else "off", **rounded(metrics)})
        log.info("%s  %.0f s", json.dumps(results[-1]), time.time() - start)
    report = {"source": str(source), "images": n_images, "decoding": decoding, "rerank": captions.rerank,
              "results": results, "chosen": choose(results)}
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def markdown(report: dict) -> str:
    lines = ["| alpha | beta | tau | selection layer | CIDEr | CHAIR_s | CHAIR_i | object F1 | words |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        s = r["setting"]
        head = "off | | | " if s == "off" else f"{s['alpha']} | {s['beta']} | {s['tau']} | {s['selection_layer']}"
        cells = [_fmt(r[k]) for k in ("cider", "chair_s", "chair_i", "object_f1")]
        lines.append(f"| {head} | {' | '.join(cells)} | {r['vocab_size']} |")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
