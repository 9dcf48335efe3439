"""Fit the grounding thresholds (edgecap.vision.grounding.GroundingRules) on captioned train photos.

A detection of class c at score s counts as right when a human reference names c (CHAIR
synonyms). Per class, `sure` is the lowest score at which the detections at or above it
are right at least --sure-precision of the time, `likely` the same at --likely-precision;
each class's precision is shrunk toward all classes pooled, so a class seen a few times
borrows from the rest, and a class never seen gets the pooled threshold. Faces (as
evidence of a person) and ImageNet top-1 labels (right when a reference uses the word)
get one threshold each. References omit things that are there, so these precisions are
lower bounds and the thresholds err on the side of hedging.

Photos: the 204 COCO photos of the train split (everyday scenes, what we tune for) and a
fixed sample of Flickr8k train photos (people and dogs outdoors). Val is never used.
The unlabelled COCO/ADE20K photos give detector-only statistics: how often each class
fires at its fitted threshold on photos nobody captioned.

    python bench/ground_calibrate.py --model models/edgecap-base --data ../shared/data \
        --out bench/results/grounding-fit.json --write-bundle
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecap.core.bundle import load_bundle, write_manifest  # noqa: E402
from edgecap.core.image import read_image  # noqa: E402
from edgecap.evaluation.decision_metrics import mentioned  # noqa: E402
from edgecap.metrics.chair import chair_objects, load_chair_table  # noqa: E402
from edgecap.vision.grounding import GroundingRules  # noqa: E402

PRIOR = 4.0  # pseudo-observations pulling a class's precision toward the pooled curve


def perceive_all(model: Path, paths: list[Path], cache: Path | None) -> list[dict]:
    """Per photo: every detection (name, score), face scores and ImageNet labels (cached by file)."""
    from edgecap.caption import describer_for
    from edgecap.core.model import OnnxCaptioner

    done = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    todo = [p for p in paths if str(p) not in done]
    if todo:
        captioner = OnnxCaptioner.load(model)
        perceiver = describer_for(captioner).perceiver
        if perceiver is None:
            raise SystemExit(f"{model} has no perception members (run `python -m export perception`)")
        for i, path in enumerate(todo):
            rgb = read_image(path)
            pooled = captioner.encode([rgb]).pooled[0]
            p = perceiver.perceive(rgb, pooled)
            done[str(path)] = {"objects": [[d.name, d.score, list(d.box)] for d in p.objects],
                               "faces": [[f.score, list(f.box)] for f in p.faces], "labels": [list(nl) for nl in p.labels]}
            if i % 100 == 99:
                print(f"  perceived {i + 1}/{len(todo)}", file=sys.stderr, flush=True)
                if cache:
                    cache.write_text(json.dumps(done))
        if cache:
            cache.write_text(json.dumps(done))
    return [done[str(p)] for p in paths]


def precision_threshold(pairs: list[tuple[float, bool]], target: float, prior_curve=None,
                        min_hits: int = 1) -> float | None:
    """Lowest observed score s with (smoothed) precision of {score >= s} >= target, or None."""
    pairs = sorted(pairs, key=lambda p: -p[0])
    best, right = None, 0
    for n, (score, ok) in enumerate(pairs, 1):
        right += ok
        prior = prior_curve(score) if prior_curve else right / n
        smoothed = (right + PRIOR * prior) / (n + PRIOR) if prior_curve else right / n
        if smoothed >= target and right >= min_hits:
            best = score
    return best


def isotonic(pairs: list[tuple[float, bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct scores ascending, P(right | score) fitted non-decreasing (pool adjacent
    violators), and how many photos each fitted value rests on."""
    by_score: dict[float, list[float]] = {}
    for score, ok in pairs:
        right_n = by_score.setdefault(score, [0.0, 0.0])
        right_n[0] += ok
        right_n[1] += 1
    scores = np.array(sorted(by_score))
    blocks: list[list[float]] = []  # [right, n, distinct scores]
    for score in scores:
        blocks.append([*by_score[score], 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            right, n, k = blocks.pop()
            blocks[-1] = [blocks[-1][0] + right, blocks[-1][1] + n, blocks[-1][2] + k]
    fitted = np.concatenate([np.full(int(k), right / n) for right, n, k in blocks])
    support = np.concatenate([np.full(int(k), n) for _, n, k in blocks])
    return scores, fitted, support


def per_score_threshold(pairs: list[tuple[float, bool]], target: float, pooled=None) -> float | None:
    """Lowest observed score s from which P(right | score) >= target at every score: a detection at
    the threshold itself, not only those above it on average, is right that often. A class's fitted
    value is shrunk toward the pooled one by how few photos it rests on."""
    if not pairs:
        return None
    scores, fitted, support = isotonic(pairs)
    if pooled is not None:
        p_scores, p_fitted, _ = pooled
        prior = p_fitted[np.clip(np.searchsorted(p_scores, scores, side="right") - 1, 0, len(p_fitted) - 1)]
        fitted = (support * fitted + PRIOR * prior) / (support + PRIOR)
    ok = fitted >= target
    if not ok[-1]:
        return None
    first = len(ok) - int(np.argmin(ok[::-1])) if not ok.all() else 0
    return float(scores[first])


def pooled_curve(pairs: list[tuple[float, bool]]):
    """Precision of all detections at or above a score, as a function of the score."""
    scores = np.array(sorted((p[0] for p in pairs), reverse=True))
    oks = np.array([p[1] for p in sorted(pairs, key=lambda p: -p[0])], dtype=float)
    cum = np.cumsum(oks) / np.arange(1, len(oks) + 1)

    def curve(s: float) -> float:
        i = np.searchsorted(-scores, -s, side="right") - 1
        return float(cum[max(i, 0)])
    return curve


def fit(photos: list[dict], truths: list[set[str]], refs: list[list[str]], table, args) -> dict:
    per_class: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    faces, labels = [], []
    for photo, truth, ref in zip(photos, truths, refs):
        best: dict[str, float] = {}
        for name, score, _ in photo["objects"]:
            best[name] = max(best.get(name, 0.0), score)
        for name, score in best.items():
            per_class[name].append((score, name in truth))
        if photo["faces"]:
            faces.append((max(score for score, _ in photo["faces"]), "person" in truth))
        if photo["labels"]:
            name, p = photo["labels"][0]
            labels.append((p, mentioned(name, ref, truth, table)))
    pooled = [pair for pairs in per_class.values() for pair in pairs]
    per_score = getattr(args, "per_score", False)
    curve = isotonic(pooled) if per_score else pooled_curve(pooled)
    threshold = per_score_threshold if per_score else precision_threshold
    default_sure = threshold(pooled, args.sure_precision) or 0.9
    default_likely = threshold(pooled, args.likely_precision) or default_sure
    sure, likely, support = {}, {}, {}
    for name, pairs in sorted(per_class.items()):
        s = threshold(pairs, args.sure_precision, curve)
        lk = threshold(pairs, args.likely_precision, curve)
        sure[name] = round(max(s if s is not None else 1.01, args.floor), 3)
        likely[name] = round(min(max(lk if lk is not None else 1.01, args.floor), sure[name]), 3)
        support[name] = {"photos": len(pairs), "right": int(sum(ok for _, ok in pairs))}
    face = threshold(faces, args.sure_precision) if faces else None
    label_sure = threshold(labels, args.sure_precision) if labels else None
    label_likely = threshold(labels, args.likely_precision) if labels else None
    rules = GroundingRules(sure=sure, likely=likely, default_sure=round(default_sure, 3),
                           default_likely=round(default_likely, 3), face=round(max(face or 0.9, 0.6), 3),
                           label_sure=round(label_sure or 1.01, 3),
                           label_likely=round(min(label_likely or 1.01, label_sure or 1.01), 3),
                           fitted_on=args.fitted_on)
    return {"rules": rules.to_dict(), "support": support,
            "faces": {"photos": len(faces), "right": int(sum(ok for _, ok in faces))},
            "labels": {"photos": len(labels), "right": int(sum(ok for _, ok in labels))}}


def firing_rates(photos: list[dict], rules: GroundingRules) -> dict:
    """Detector-only statistics on unlabelled photos: share with each class at its sure / likely threshold."""
    n = max(len(photos), 1)
    sure, likely, any_sure = defaultdict(int), defaultdict(int), 0
    for photo in photos:
        names_sure = {name for name, s, _ in photo["objects"] if s >= rules.sure_for(name)}
        names_likely = {name for name, s, _ in photo["objects"] if s >= rules.likely_for(name)}
        for name in names_sure:
            sure[name] += 1
        for name in names_likely:
            likely[name] += 1
        any_sure += bool(names_sure)
    top = sorted(likely, key=lambda k: -likely[k])[:15]
    return {"photos": len(photos), "share_with_a_sure_object": round(any_sure / n, 3),
            "top_classes": {k: {"sure": round(sure[k] / n, 3), "likely": round(likely[k] / n, 3)} for k in top}}


def sample(items: list, k: int) -> list:
    """A fixed sample, by the hash of each file name (stable when the data grows)."""
    return sorted(items, key=lambda r: hashlib.sha1(str(r).encode()).hexdigest())[:k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/edgecap-base"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--flickr", type=int, default=300, help="Flickr8k train photos to add to the COCO ones")
    ap.add_argument("--unlabeled", type=int, default=600, help="unlabelled photos for detector-only statistics")
    ap.add_argument("--sure-precision", type=float, default=0.85)
    ap.add_argument("--likely-precision", type=float, default=0.8)
    ap.add_argument("--per-score", action="store_true",
                    help="a threshold where detections at that score (not only those above it, on average) are "
                         "right this often (isotonic fit)")
    ap.add_argument("--floor", type=float, default=0.3, help="no threshold below this score")
    ap.add_argument("--cache", type=Path, default=None, help="JSON cache of the perception results")
    ap.add_argument("--out", type=Path, default=None, help="write the fit and its statistics here")
    ap.add_argument("--write-bundle", action="store_true", help="store the rules in the bundle manifest")
    args = ap.parse_args()

    captioned = args.data / "captioned"
    rows = [json.loads(line) for line in (captioned / "captions.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    coco = [r for r in train if r["source"].startswith("coco")]
    flickr = sample([r for r in train if r["source"] == "flickr8k"], args.flickr)
    chosen = coco + flickr
    args.fitted_on = (f"{len(coco)} COCO + {len(flickr)} Flickr8k photos of the train split (references via CHAIR "
                      f"synonyms); {'per-score ' if args.per_score else ''}sure precision {args.sure_precision}, "
                      f"likely {args.likely_precision}")
    table = load_chair_table(args.data / "chair" / "synonyms.txt")
    photos = perceive_all(args.model, [captioned / r["file"] for r in chosen], args.cache)
    truths = [{o for ref in r["captions"] for o in chair_objects(ref, table)} for r in chosen]
    result = fit(photos, truths, [r["captions"] for r in chosen], table, args)
    rules = GroundingRules.from_dict(result["rules"])
    unlabeled = sample(sorted((args.data / "unlabeled" / "images").glob("*.jpg")), args.unlabeled)
    result["unlabeled"] = firing_rates(perceive_all(args.model, unlabeled, args.cache), rules)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in result["rules"].items() if k not in ("sure", "likely")}, indent=1))
    print(json.dumps(result["unlabeled"], indent=1))
    if args.write_bundle:
        manifest = load_bundle(args.model).manifest
        manifest["grounding"] = result["rules"]
        write_manifest(args.model, manifest)
        print(f"wrote the rules into {args.model}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
