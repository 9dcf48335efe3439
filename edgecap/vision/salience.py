"""Would someone describing this photo mention this object?

A detector can be right that a person stands far behind a dog, and a describer still says only
"A dog runs on the grass.". A hedge ("I'm not sure. I can see a dog and a person.") is judged
by whether it names what people name, so it should name the main things and leave out the
background. This module scores, per thing in view (a COCO class, or an ImageNet name), the
probability that a reference caption mentions it: a logistic regression on a few features of
the evidence, fitted on train photos by bench/mention_fit.py and stored in the bundle
manifest's "grounding" section ("mention_model": feature -> weight, "bias" included).

Features (all in [0, 1] or small counts):
  score   best detection score of the class (0 when undetected)
  area    square root of the share of the frame its biggest box covers
  centre  how close that box's centre is to the frame's centre (1 = centre, 0 = a corner)
  biggest 1 when it is the biggest box in the frame
  count   log(1 + detections of the class at any score)
  face    best face score (people only)
  label   ImageNet probability of labels naming it
  pool    share of the candidate captions that name it
  first   1 when the model's first candidate names it
  memory  share of the caption memory's neighbours (captions of similar train photos) naming it
  imagenet 1 for an ImageNet name that is no COCO class ("desk", "plate of food")
  and one indicator per COCO supercategory (person, animal, vehicle, ...).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

# The COCO supercategories (from the COCO annotations' category list).
_GROUPS = {
    "person": "person",
    "vehicle": "bicycle, car, motorcycle, airplane, bus, train, truck, boat",
    "outdoor": "traffic light, fire hydrant, stop sign, parking meter, bench",
    "animal": "bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe",
    "accessory": "backpack, umbrella, handbag, tie, suitcase",
    "sports": "frisbee, skis, snowboard, sports ball, kite, baseball bat, baseball glove, skateboard, surfboard, "
              "tennis racket",
    "kitchen": "bottle, wine glass, cup, fork, knife, spoon, bowl",
    "food": "banana, apple, sandwich, orange, broccoli, carrot, hot dog, pizza, donut, cake",
    "furniture": "chair, couch, potted plant, bed, dining table, toilet",
    "electronic": "tv, laptop, mouse, remote, keyboard, cell phone",
    "appliance": "microwave, oven, toaster, sink, refrigerator",
    "indoor": "book, clock, vase, scissors, teddy bear, hair drier, toothbrush",
}
SUPERCATEGORY = {name: group for group, names in _GROUPS.items() for name in names.split(", ")}
GROUPS = tuple(_GROUPS)
FEATURES = ("score", "area", "centre", "biggest", "count", "face", "label", "pool", "first", "memory", "imagenet",
            *(f"is_{g}" for g in GROUPS))


def mention_features(name: str, evidence, pool_share: Mapping[str, float], first: frozenset[str] = frozenset(),
                     memory_share: Mapping[str, float] | None = None) -> dict[str, float]:
    """The features of one thing in view (a COCO class or an ImageNet name) for one photo.

    evidence: edgecap.vision.grounding.Evidence; pool_share: class -> share of the candidate
    captions naming it; first: the classes the model's first candidate names."""
    dets = [d for d in evidence.objects if d.name == name]
    f = dict.fromkeys(FEATURES, 0.0)
    if dets:
        best = max(dets, key=lambda d: d.score)
        big = max(dets, key=_area)
        f["score"] = best.score
        f["area"] = math.sqrt(_area(big))
        cx, cy = (big.box[0] + big.box[2]) / 2, (big.box[1] + big.box[3]) / 2
        f["centre"] = max(0.0, 1.0 - math.hypot(cx - 0.5, cy - 0.5) / math.hypot(0.5, 0.5))
        f["biggest"] = float(big is max(evidence.objects, key=_area))
        f["count"] = math.log1p(len(dets))
    if name == "person":
        f["face"] = evidence.face_score
    group = SUPERCATEGORY.get(name)
    if group is None:
        f["imagenet"] = 1.0
        f["label"] = sum(p for n, p in evidence.labels if n == name)
    else:
        f["label"] = evidence.label_support.get(name, 0.0)
        f[f"is_{group}"] = 1.0
    f["pool"] = pool_share.get(name, 0.0)
    f["first"] = float(name in first)
    f["memory"] = (memory_share or {}).get(name, 0.0)
    return f


def mention_probability(features: Mapping[str, float], weights: Mapping[str, float]) -> float:
    z = weights.get("bias", 0.0) + sum(w * features.get(k, 0.0) for k, w in weights.items() if k != "bias")
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def _area(d) -> float:
    return max(0.0, d.box[2] - d.box[0]) * max(0.0, d.box[3] - d.box[1])


def pool_shares(texts: list[str]) -> tuple[dict[str, float], frozenset[str]]:
    """Class -> share of the candidate captions naming it, and the classes the first one names."""
    from edgecap.vision.grounding import caption_classes

    named = [caption_classes(t) for t in texts]
    share: dict[str, float] = {}
    for classes in named:
        for c in classes:
            share[c] = share.get(c, 0.0) + 1.0 / len(texts)
    return share, frozenset(named[0]) if named else frozenset()


def things_in_view(evidence, rules, pool_share: Mapping[str, float]) -> list[str]:
    """What a sentence about this photo could name: detected classes, a person behind a face,
    classes of ImageNet labels, ImageNet names at the likely level, classes the candidates name."""
    found = dict.fromkeys(d.name for d in evidence.objects)
    if evidence.faces:
        found["person"] = None
    found.update(dict.fromkeys(evidence.label_support))
    from edgecap.vision.grounding import coco_class_of_label

    found.update(dict.fromkeys(n for n, p in evidence.labels
                               if p >= rules.label_likely and coco_class_of_label(n) is None))
    found.update(dict.fromkeys(pool_share))
    return list(found)


def mention_chance(texts: list[str], evidence, rules, neighbour_captions: list[str] = ()):
    """name -> probability a describer mentions it on this photo, or None when the bundle has no model.
    An ImageNet name that is a COCO class is scored as that class."""
    if not rules.mention_model:
        return None
    from edgecap.vision.grounding import coco_class_of_label

    memo: dict[str, float] = {}
    shares: list = []  # counted on the first question only: most photos never ask

    def chance(name: str) -> float:
        if not shares:
            shares.extend(pool_shares(texts))
            shares.append(pool_shares(list(neighbour_captions))[0] if neighbour_captions else {})
        share, first, memory_share = shares
        if name not in memo:
            cls = name if name in SUPERCATEGORY else coco_class_of_label(name) or name
            memo[name] = mention_probability(mention_features(cls, evidence, share, first, memory_share),
                                              rules.mention_model)
        return memo[name]
    return chance
