"""Fit the "would a describer mention it" model (edgecap.vision.salience) on cached photos.

Every thing in view of every photo of a decision cache (bench/decision_cache.py) is one row:
its features, and whether a reference caption mentions it (CHAIR synonyms for COCO classes,
a shared word for ImageNet names: edgecap.evaluation.decision_metrics.mentioned). A logistic
regression with an L2 penalty is fitted by Newton's method (numpy), scored by k-fold
cross-validation over photos, and printed as the JSON the manifest's grounding section holds.

    python bench/mention_fit.py /tmp/dc-train.json --cv 5 --out /tmp/mention.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decision_replay import perception_of  # noqa: E402
from edgecap.evaluation.decision_metrics import mentioned  # noqa: E402
from edgecap.metrics.chair import chair_objects, load_chair_table  # noqa: E402
from edgecap.vision.grounding import GroundingRules, gather  # noqa: E402
from edgecap.vision.salience import FEATURES, mention_features, pool_shares, things_in_view  # noqa: E402


def rows(cache: dict, rules: GroundingRules, table, captions: list[str]
         ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """X (rows x FEATURES), y (mentioned), the photo of each row, the name of each row.
    captions: the caption memory's (the neighbours in the cache index it)."""
    xs, ys, photos, names = [], [], [], []
    for key, e in cache.items():
        evidence = gather(perception_of(e), rules)
        share, first = pool_shares(e["texts"])
        memory_share = pool_shares([captions[j] for j in e["neighbours"]])[0]
        truth = {o for ref in e["refs"] for o in chair_objects(ref, table)}
        for name in things_in_view(evidence, rules, share):
            f = mention_features(name, evidence, share, first, memory_share)
            xs.append([f[k] for k in FEATURES])
            ys.append(float(mentioned(name, e["refs"], truth, table)))
            photos.append(key)
            names.append(name)
    return np.array(xs), np.array(ys), photos, names


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """Weights (bias first) of an L2-penalised logistic regression (the bias is not penalised)."""
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-a @ w))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(w[0] + x @ w[1:])))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    pos = y == 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def as_weights(w: np.ndarray) -> dict[str, float]:
    return {"bias": round(float(w[0]), 4), **{k: round(float(v), 4) for k, v in zip(FEATURES, w[1:])}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--model", type=Path, default=Path("models/edgecap-base"))
    ap.add_argument("--synonyms", type=Path, default=Path("../shared/data/chair/synonyms.txt"))
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--drop", default="", help="comma-separated features left out (weight 0)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="store the model and the two thresholds below in the "
                    "bundle manifest's grounding section (then: python -m export refresh MODEL)")
    ap.add_argument("--name-at", type=float, default=0.6, help="mention_name_at (chosen by decision_replay --cv)")
    ap.add_argument("--candidate-at", type=float, default=0.4, help="mention_candidate_at (idem)")
    args = ap.parse_args()

    from edgecap.core.model import OnnxCaptioner
    captioner = OnnxCaptioner.load(args.model, threads=1)
    rules = GroundingRules.from_dict(captioner.bundle.manifest.get("grounding"))
    cache = json.loads(args.cache.read_text())
    x, y, photos, names = rows(cache, rules, load_chair_table(args.synonyms), captioner.memory.captions)
    drop = [FEATURES.index(f) for f in args.drop.split(",") if f]
    x[:, drop] = 0.0
    keys = sorted(cache)
    fold_of = {k: i % args.cv for i, k in enumerate(keys)}
    folds = np.array([fold_of[p] for p in photos])
    held = np.zeros(len(y))
    for i in range(args.cv):
        w = fit(x[folds != i], y[folds != i], args.l2)
        held[folds == i] = predict(w, x[folds == i])
    print(f"{len(y)} things in view of {len(cache)} photos, {y.mean():.3f} mentioned; "
          f"{args.cv}-fold AUC {auc(y, held):.3f}, "
          f"log loss {-np.mean(y * np.log(held) + (1 - y) * np.log(1 - held)):.3f}")
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        kept = held >= t
        print(f"  p >= {t:.1f}: keeps {kept.mean():.3f} of things, precision {y[kept].mean():.3f}, "
              f"recall {y[kept].sum() / y.sum():.3f}")
    weights = as_weights(fit(x, y, args.l2))
    print(json.dumps(weights))
    if args.out:
        args.out.write_text(json.dumps(weights))
    if args.write:
        path = args.model / "manifest.json"
        manifest = json.loads(path.read_text())
        sources = sorted({e["source"].split("-")[0] for e in cache.values()})
        manifest["grounding"].update(
            mention_model=weights, mention_name_at=args.name_at, mention_candidate_at=args.candidate_at,
            mention_fitted_on=f"bench/mention_fit.py on {len(cache)} train photos ({', '.join(sources)}), "
                              f"{len(y)} things in view; features left out: {args.drop or 'none'}; "
                              f"{args.cv}-fold AUC {auc(y, held):.3f}; thresholds by decision_replay --cv 5")
        path.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
