"""Replay the spoken decision on cached inputs (bench/decision_cache.py) and score it.

Scores coverage, chair_s_sure, hedged_precision and CIDEr (python tokenizer; the IDF is
the evaluated set's, as in `edgecap eval`) per source, for the bundle's rules and for
variants given as JSON overrides of GroundingRules. Train photos are scored by k-fold
cross-validation when --cv refits the thresholds on the other folds.

    python bench/decision_replay.py /tmp/dc-val.json
    python bench/decision_replay.py /tmp/dc-train.json --cv 5 --set '{"check_attributes": false}'
    python bench/decision_replay.py /tmp/dc-val.json --pool g4       # a smaller cached pool
    python bench/decision_replay.py /tmp/dc-val.json --early g0      # g0 when its sentence stands, else the full pool
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgecap.caption import Describer  # noqa: E402
from edgecap.evaluation.decision_metrics import decision_metrics, source_group  # noqa: E402
from edgecap.metrics.chair import chair_objects, load_chair_table  # noqa: E402
from edgecap.metrics.text_normalise import simple_tokenize  # noqa: E402
from edgecap.vision.perception import Detection, Perception  # noqa: E402


def perception_of(entry: dict) -> Perception:
    objects = tuple(Detection(n, s, tuple(b)) for n, s, b in entry["objects"])
    faces = tuple(Detection("face", s, tuple(b)) for s, b in entry["faces"])
    return Perception(objects, faces, tuple((n, p) for n, p in entry["labels"]), 0.0)


def needs_samples(confidence: str, sentence: str) -> bool:
    """--early's rule: a sure sentence from the smaller pool stands unless it keeps a colour, a person
    kind or clothing (those are said only when the pool agrees on them, and two captions agree far
    more easily than ten); anything else is decided again on the full pool."""
    from edgecap.wording import specifics
    return confidence != "sure" or any(specifics(sentence).values())


def replay(describer: Describer, cache: dict, keys=None, pool: str | None = None, early: str | None = None,
           pixels=None) -> dict:
    """The decision per photo on the bundle's pool, or on cached pool `pool`; with `early`, on that
    pool when its sentence stands (needs_samples), and on the other otherwise. pixels: key -> RGB
    photo (for the colour check), or None to decide without pixels."""
    out = {}
    for key in keys or cache:
        e = cache[key]
        texts = e["pools"][pool] if pool else e["texts"]
        neighbours, perception = np.array(e["neighbours"]), perception_of(e)
        rgb = pixels(key) if pixels else None
        if early:
            first = describer.decide_texts(e["pools"][early], neighbours, perception, rgb)
            if not needs_samples(first.confidence, first.sentence):
                out[key] = first
                continue
            if pool == "samples":  # the second loop of a staged bundle: both loops' candidates
                texts = e["pools"][early] + texts
        out[key] = describer.decide_texts(texts, neighbours, perception, rgb)
    return out


def cider(spoken: dict, cache: dict) -> float:
    from pycocoevalcap.cider.cider import Cider
    refs = {k: [simple_tokenize(r) for r in cache[k]["refs"]] for k in spoken}
    preds = {k: [simple_tokenize(s.sentence)] for k, s in spoken.items()}
    return float(Cider().compute_score(refs, preds)[0])


class _Said:  # what decision_metrics reads
    def __init__(self, choice):
        self.caption, self.confidence, self.named = choice.sentence, choice.confidence, choice.named


def score(spoken: dict, cache: dict, table) -> dict:
    groups: dict[str, list[str]] = {"all": list(spoken)}
    for k in spoken:
        groups.setdefault(source_group(cache[k]["source"]), []).append(k)
    result = {}
    for name, keys in groups.items():
        m = decision_metrics({k: _Said(spoken[k]) for k in keys}, {k: cache[k]["refs"] for k in keys}, table)
        m["cider"] = cider({k: spoken[k] for k in keys}, cache)
        m.update(specifics_precision({k: spoken[k] for k in keys}, cache))
        m["n"] = len(keys)
        result[name] = m
    return result


KIND_MATCH = {"man": {"man"}, "woman": {"woman"}, "boy": {"boy", "child"}, "girl": {"girl", "child"},
              "child": {"child", "boy", "girl"}}


def specifics_precision(spoken: dict, cache: dict) -> dict:
    """In sure sentences: share of person kinds a reference agrees with (when a reference says a kind),
    and of colour / clothing words some reference uses (a lower bound: references omit them)."""
    from edgecap.wording import PERSON_KIND_OF, person_kinds, specifics, words
    from edgecap.details import stem, stems, unchecked_words
    from edgecap.vision.grounding import grounding_table
    right = {"kind": [0, 0], "colour": [0, 0], "clothing": [0, 0], "detail": [0, 0]}
    for k, s in spoken.items():
        if s.confidence != "sure":
            continue
        refs = cache[k]["refs"]
        ref_kinds = set().union(*[person_kinds(r) for r in refs])
        ref_words = {w for r in refs for w in words(r)}
        found = specifics(s.sentence)
        for kind in {PERSON_KIND_OF[w] for w in found["person"]}:
            if ref_kinds:
                right["kind"][0] += bool(KIND_MATCH[kind] & ref_kinds)
                right["kind"][1] += 1
        ref_stems = frozenset().union(*[stems(r) for r in refs])
        for w in unchecked_words(s.sentence, grounding_table()):  # actions and places (a lower bound, as colours)
            right["detail"][0] += stem(w) in ref_stems
            right["detail"][1] += 1
        for typ in ("colour", "clothing"):
            for w in found[typ]:
                right[typ][0] += w in ref_words
                right[typ][1] += 1
    return {f"{t}_precision_sure": (r / n if n else None, n) for t, (r, n) in right.items()}


def fit_rules(cache: dict, keys: list[str], base, table, args) -> object:
    """Refit the detector/face/label thresholds on `keys` (bench/ground_calibrate.fit)."""
    import ground_calibrate as gc
    from edgecap.vision.grounding import GroundingRules
    photos = [cache[k] for k in keys]
    truths = [{o for ref in cache[k]["refs"] for o in chair_objects(ref, table)} for k in keys]
    ns = argparse.Namespace(sure_precision=args.sure_precision, likely_precision=args.likely_precision,
                            floor=0.3, fitted_on="cv", per_score=args.per_score)
    photos = [{"objects": p["objects"], "faces": p["faces"], "labels": p["labels"]} for p in photos]
    fitted = GroundingRules.from_dict(gc.fit(photos, truths, [cache[k]["refs"] for k in keys], table, ns)["rules"])
    keep = {f: getattr(base, f) for f in base.__dataclass_fields__
            if f not in ("sure", "likely", "default_sure", "default_likely", "face", "label_sure", "label_likely")}
    fitted = replace(fitted, **keep)
    if args.mention_l2 is not None:  # refit the mention model on the same photos (bench/mention_fit.py)
        import mention_fit
        x, y, _, _ = mention_fit.rows({k: cache[k] for k in keys}, fitted, table, args.memory_captions)
        x[:, [mention_fit.FEATURES.index(f) for f in args.mention_drop.split(",") if f]] = 0.0
        fitted = replace(fitted, mention_model=mention_fit.as_weights(mention_fit.fit(x, y, args.mention_l2)))
    return fitted


def fmt(result: dict) -> str:
    lines = []
    for name, m in result.items():
        lines.append(f"  {name:9s} n={m['n']:5d} cov={m['coverage']:.3f} chair_s_sure={m['chair_s_sure'] or 0:.3f} "
                     f"hedgeP={m['hedged_precision'] or 0:.3f} unk={m['unknown_rate']:.3f} cider={m['cider']:.3f} "
                     + " ".join(f"{k[:4]}={v[0] or 0:.2f}/{v[1]}" for k, v in m.items() if k.endswith("_sure")
                                and isinstance(v, tuple)))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--model", type=Path, default=Path("models/edgecap-base"))
    ap.add_argument("--synonyms", type=Path, default=Path("../shared/data/chair/synonyms.txt"))
    ap.add_argument("--set", action="append", default=[], help="JSON overrides of GroundingRules (one variant each)")
    ap.add_argument("--cv", type=int, default=0, help="k-fold: refit thresholds on the other folds (COCO + Flickr)")
    ap.add_argument("--sure-precision", type=float, default=0.85)
    ap.add_argument("--likely-precision", type=float, default=0.8)
    ap.add_argument("--per-score", action="store_true",
                    help="with --cv or --fit: thresholds by per-score precision (ground_calibrate --per-score)")
    ap.add_argument("--fit", type=Path, default=None, help="refit the thresholds on this cache (train) first")
    ap.add_argument("--mention-l2", type=float, default=None,
                    help="with --cv or --fit: refit the mention model (bench/mention_fit.py) there too")
    ap.add_argument("--mention-drop", default="", help="features the refitted mention model leaves out")
    ap.add_argument("--pool", default=None, help="score this cached pool (decision_cache.py --pools) instead")
    ap.add_argument("--early", default=None, help="decide on this cached pool first; on the full one if needs_samples")
    ap.add_argument("--dump", type=Path, default=None, help="write key -> sentence, confidence, named")
    ap.add_argument("--pixels", type=Path, default=None, metavar="DATA",
                    help="the data folder: decide with the photos' pixels (colour words are checked)")
    args = ap.parse_args()
    pixels = None
    if args.pixels:
        from functools import lru_cache

        from edgecap.core.image import read_image
        pixels = lru_cache(maxsize=None)(lambda key: read_image(args.pixels / "captioned" / key))

    from edgecap.core.model import OnnxCaptioner
    cache = json.loads(args.cache.read_text())
    table = load_chair_table(args.synonyms)
    captioner = OnnxCaptioner.load(args.model, threads=1)
    base = Describer.for_captioner(captioner)
    args.memory_captions = captioner.memory.captions
    variants = [("bundle", {})] + [(s, json.loads(s)) for s in args.set]
    for label, overrides in variants:
        rules = replace(base.rules, **overrides)
        if args.cv:
            keys = sorted(cache)
            folds = [keys[i::args.cv] for i in range(args.cv)]
            spoken = {}
            for i, held in enumerate(folds):
                train = [k for j, f in enumerate(folds) if j != i for k in f]
                d = Describer(captioner, base.perceiver, fit_rules(cache, train, rules, table, args))
                spoken.update(replay(d, cache, held, args.pool, args.early, pixels))
        elif args.fit:
            fit_cache = json.loads(args.fit.read_text())
            fitted = fit_rules(fit_cache, sorted(fit_cache), rules, table, args)
            spoken = replay(Describer(captioner, base.perceiver, fitted), cache, None, args.pool, args.early, pixels)
        else:
            spoken = replay(Describer(captioner, base.perceiver, rules), cache, None, args.pool, args.early, pixels)
        print(label)
        print(fmt(score(spoken, cache, table)), flush=True)
        if args.dump:
            args.dump.write_text(json.dumps({k: [c.sentence, c.confidence, list(c.named), c.model_caption]
                                             for k, c in spoken.items()}, indent=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
