"""Tune SPARC (alpha, beta, tau, selection layer) for a checkpoint on the val split.

Greedy torch decoding on cached features; each setting is scored with CIDEr, CHAIR_i and
object F1. The chosen setting is the one with the fewest hallucinated objects among
those that keep object F1 and CIDEr at least as high as calibration off (within a
small tolerance); if none qualifies, calibration stays at the reference defaults and
the report says so.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from edgecap.calibration import CalibrationSpec
from export.data import DEFAULT_DATA, feature_cache
from export.pipeline import load_checkpoint
from export.train import greedy_captions, quick_cider

log = logging.getLogger(__name__)
F1_TOLERANCE = 0.002
CIDER_TOLERANCE = 0.01


def score(predictions: list[str], references: list[list[str]], synonyms: Path | None) -> dict[str, float]:
    from edgecap.chair import chair_metrics, load_chair_table

    preds = {str(i): p for i, p in enumerate(predictions)}
    refs = {str(i): r for i, r in enumerate(references)}
    chair = chair_metrics(preds, refs, load_chair_table(synonyms))
    words = [w for p in predictions for w in p.lower().split()]
    return {"cider": quick_cider(predictions, references), **chair,
            "mean_length": len(words) / max(len(predictions), 1), "vocab_size": len(set(words))}


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


def sweep(checkpoint: Path, out: Path, n_images: int = 600, data_dir: Path = DEFAULT_DATA,
          cache_dir: Path = Path("cache")) -> dict:
    model, tokenizer_json, _, _ = load_checkpoint(checkpoint)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    records, feats = feature_cache(model.cfg.encoder, model.cfg.image_size, "val", False, data_dir, cache_dir)
    feats = torch.from_numpy(np.asarray(feats[:n_images]))
    references = [r.captions for r in records[:n_images]]
    synonyms = data_dir / "chair" / "synonyms.txt"
    results = []
    for spec in grid(model.cfg.n_layers):
        start = time.time()
        tokens = greedy_captions(model, feats, spec)
        metrics = score([tokenizer.decode(t) for t in tokens], references, synonyms if synonyms.exists() else None)
        row = {"setting": spec.to_dict() if spec else "off", **{k: round(v, 4) if isinstance(v, float) else v
                                                                 for k, v in metrics.items()}}
        results.append(row)
        log.info("%s  %.0f s", json.dumps(row), time.time() - start)
    report = {"checkpoint": str(checkpoint), "images": n_images, "results": results, "chosen": choose(results)}
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


def chosen_spec(report_path: Path) -> CalibrationSpec:
    report = json.loads(Path(report_path).read_text())
    return CalibrationSpec.from_dict(report["chosen"]["setting"])


