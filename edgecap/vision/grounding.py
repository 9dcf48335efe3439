"""Is a caption supported by what the detectors see?

A caption's objects are found with the CHAIR synonym table (edgecap.metrics.chair), plus a
few more words for people. A caption is *supported* when every object it names is
detected above that class's calibrated threshold (a person also by a face), each count
it states ("two dogs", "people") is seen, and no strong detection or confident ImageNet
label says the thing is something else (a "dog" where the detector sees a bear).

Thresholds are fitted by bench/ground_calibrate.py and stored in the bundle manifest
under "grounding"; the defaults below are only for bundles without a fit.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from edgecap.metrics.chair import (ANIMAL_CLASSES, BUILTIN_SYNONYMS, ChairTable, Mention, build_table, chair_mentions,
                           chair_objects, parse_synonym_lines)

# Caption words for people that the CHAIR table lacks; without them "a hiker" would be
# a claim nobody checks.
EXTRA_PERSON_WORDS = ("dancer", "swimmer", "runner", "climber", "hiker", "skater", "cowboy", "bride", "groom",
                      "couple", "team", "athlete", "wrestler", "boxer", "jockey", "biker", "rock climber",
                      "football player", "baseball player", "musician", "singer", "guitarist", "drummer",
                      "performer", "audience", "spectator", "he", "she", "someone", "somebody", "astronaut",
                      "group of people")
# Words that mean at least two of something.
PLURAL_WORDS = {"people", "children", "kids", "men", "women", "crowd", "couple", "team", "family", "group",
                "several", "many", "some", "pair", "both", "audience", "spectators", "friends"}
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
# Classes the detector confuses with each other: a higher-scoring box of one over a box
# of another says the caption's word is the wrong one.
CONFUSABLE = (frozenset(ANIMAL_CLASSES | {"teddy bear"}), frozenset({"car", "truck", "bus", "train"}),
              frozenset({"cup", "wine glass", "bottle", "vase", "bowl"}),
              frozenset({"couch", "chair", "bed", "bench"}), frozenset({"airplane", "bird", "kite"}))


@functools.lru_cache(maxsize=1)
def grounding_table() -> ChairTable:
    """The built-in CHAIR table (run time has no data folder) with the extra person words."""
    entries = parse_synonym_lines(BUILTIN_SYNONYMS.replace(",\n", ",").replace(";", "\n").splitlines())
    entries.append(["person", *EXTRA_PERSON_WORDS])
    return build_table(entries)


def caption_classes(caption: str) -> list[str]:
    """COCO classes a sentence names (grounding vocabulary), in order, without repeats."""
    return list(dict.fromkeys(chair_objects(caption, grounding_table())))


@dataclass(frozen=True)
class GroundingRules:
    """Score thresholds: `sure` to state an object, `likely` to hedge about it."""
    sure: dict[str, float] = field(default_factory=dict)  # per COCO class
    likely: dict[str, float] = field(default_factory=dict)
    default_sure: float = 0.6
    default_likely: float = 0.4
    face: float = 0.8  # a YuNet face this sure counts as a person
    label_sure: float = 0.7  # ImageNet posterior to say "probably"
    label_likely: float = 0.3  # ... to say "it might be"
    overlap_iou: float = 0.6  # boxes this overlapping are the same thing
    hedge_on_any_trace: bool = True  # "Probably ..." when some object is only barely detected (keeps CIDEr)
    salient_area: float = 0.05  # a likely detection this big (share of the frame) must not go unnamed
    reject_garbled: bool = True  # never speak a candidate with edgecap.wording.flaws ("... in a cat.")
    repair_repeats: bool = True  # ... but "A cat is on a window in a cat." may be said "A cat is on a window."
    # Who a person is, colours and clothing: no detector here checks them. "generic": a sure
    # sentence says them generically ("A person is climbing a rock."), a candidate that cannot be
    # is not said as sure; "hedge": such a candidate is said "Probably ..."; "keep": said as is.
    specifics: str = "generic"
    # ... unless this share of the candidate pool says the same word (per kind of word; > 1: never)
    generic_hedges: bool = True  # "Probably ..." sentences say them generically too
    specifics_agreement: dict[str, float] = field(default_factory=lambda: {"person": 1.01, "colour": 1.0,
                                                                           "clothing": 1.01})
    # A colour word the pool agrees on is still said generically when less than this share of the
    # pixels of what it describes can be that colour (edgecap.vision.colour_check).
    check_colours: bool = True
    colour_min_share: float = 0.1
    # "Two people" is not said as sure when this many more are detected surely (0: never checked).
    overcount_margin: int = 2
    trace_label: float = 0.0  # ImageNet support that counts as a trace of a class (with hedge_on_any_trace)
    hedge_max_named: int = 3  # objects listed in one evidence statement ("I can see a cup and a table.")
    hedge_likely_objects: bool = True  # with nothing seen surely, name the likely things ("I'm not sure. ...")
    hedge_might_be: bool = False  # "It might be a crane." from weak ImageNet labels alone: right 3 of 11 (train, val)
    # Would a describer mention it (edgecap.vision.salience, fitted by bench/mention_fit.py): feature ->
    # weight; empty: not used. A hedge names only things at least `mention_name_at` likely to be
    # mentioned, most likely first; "Probably <candidate>" needs each thing it names at `mention_candidate_at`.
    mention_model: dict[str, float] = field(default_factory=dict)
    mention_name_at: float = 0.0
    mention_candidate_at: float = 0.0
    mention_sure_at: float = 1.01  # a candidate whose things are only weakly seen is sure when each is this likely
    mention_fitted_on: str = ""
    # What a sure sentence says beyond the checked things ("driving", "on the beach"; edgecap.details)
    # is kept only when this share of the candidates, or of the memory neighbours' captions, says it.
    check_details: bool = True
    detail_pool_share: float = 0.2  # the spoken candidate and at least one other
    detail_neighbour_share: float = 0.2  # 3 of the 15 neighbours
    detail_verbs: bool = True  # ... verbs too (False: only places and other phrases after the verb)
    fitted_on: str = "defaults, not fitted"

    def sure_for(self, cls: str) -> float:
        return self.sure.get(cls, self.default_sure)

    def likely_for(self, cls: str) -> float:
        return self.likely.get(cls, self.default_likely)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "GroundingRules":
        d = d or {}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Evidence:
    """What the detectors say about one image, with the thresholds applied."""
    sure: dict[str, list]  # class -> its detections at or above the sure threshold
    likely: dict[str, list]  # class -> its detections at or above the likely threshold
    faces: int  # faces at or above rules.face
    face_score: float  # the best of those, or 0
    labels: tuple[tuple[str, float], ...]  # ImageNet (name, probability), best first
    objects: tuple  # every detection passed in (for overlap checks)
    salient: frozenset[str] = frozenset()  # classes a sure caption must name one of (see gather)
    label_support: dict = field(default_factory=dict)  # COCO class -> ImageNet probability of labels naming it
    all_counts: dict = field(default_factory=dict)  # class -> detections at any score (for "two dogs")

    def count(self, cls: str) -> int:
        seen = len(self.likely.get(cls, ()))
        return max(seen, self.faces) if cls == "person" else seen

    def count_any(self, cls: str) -> int:
        """Detections of a class at any score: crowded animals or people score low one by one."""
        return max(self.count(cls), self.all_counts.get(cls, 0))

    def best(self, cls: str) -> float:
        """The highest score seen for a class (a face counts for a person); 0 if none passed the likely cut."""
        found = self.likely.get(cls)
        score = found[0].score if found else 0.0
        return max(score, self.face_score) if cls == "person" else score

    def has(self, cls: str, level: str, rules: "GroundingRules") -> bool:
        """Seen at this level by the detector, a face (for a person) or a confident ImageNet label."""
        found = bool((self.sure if level == "sure" else self.likely).get(cls))
        label = self.label_support.get(cls, 0.0) >= (rules.label_sure if level == "sure" else rules.label_likely)
        return found or label or (cls == "person" and self.faces > 0)

    def margin(self, cls: str, rules: "GroundingRules") -> float:
        """How far above its sure threshold the best evidence for a class is (1.0 = at it)."""
        return max(self.best(cls) / rules.sure_for(cls), self.label_support.get(cls, 0.0) / rules.label_sure)


def gather(perception, rules: GroundingRules) -> Evidence:
    sure: dict[str, list] = {}
    likely: dict[str, list] = {}
    for d in sorted(perception.objects, key=lambda d: -d.score):
        if d.score >= rules.likely_for(d.name):
            likely.setdefault(d.name, []).append(d)
        if d.score >= rules.sure_for(d.name):
            sure.setdefault(d.name, []).append(d)
    faces = [f.score for f in perception.faces if f.score >= rules.face]
    labels = tuple(sorted(perception.labels, key=lambda nl: -nl[1]))
    label_support: dict[str, float] = {}
    for name, p in labels:
        cls = coco_class_of_label(name)
        if cls is not None:
            label_support[cls] = label_support.get(cls, 0.0) + p
    all_counts: dict[str, int] = {}
    for d in perception.objects:
        all_counts[d.name] = all_counts.get(d.name, 0) + 1
    return Evidence(sure, likely, len(faces), max(faces, default=0.0), labels, tuple(perception.objects),
                    salient_classes(likely, labels, rules), label_support, all_counts)


def salient_classes(likely: dict[str, list], labels, rules: GroundingRules) -> frozenset[str]:
    """The main thing in view: the best-scoring large likely detection, and the COCO class of a
    confident ImageNet label. A caption about a plate next to a cup of coffee names neither."""
    found = set()
    big = [d for dets in likely.values() for d in dets if box_area(d.box) >= rules.salient_area]
    if big:
        found.add(max(big, key=lambda d: d.score).name)
    for name, p in labels[:1]:
        cls = coco_class_of_label(name)
        if p >= rules.label_sure and cls is not None:
            found.add(cls)
    return frozenset(found)


def box_area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


@dataclass(frozen=True)
class Verdict:
    level: str  # "sure": every claim detected; "likely": every claim at least likely; "unsupported"
    named: tuple[str, ...]  # COCO classes the caption names
    problems: tuple[str, ...]  # why it is not sure, for logs and tests
    margin: float = 0.0  # min over named classes of best score / sure threshold (0 if a claim is unseen)


def stated_counts(mentions: list[Mention], explicit_only: bool = False) -> dict[str, int]:
    """How many of each class a caption says there are (1 unless a number or plural says more);
    explicit_only: only the classes given a number ("two dogs")."""
    counts: dict[str, int] = {}
    for m in mentions:
        before = m.words[max(0, m.start - 3):m.start]
        n = next((NUMBERS[w] for w in reversed(before) if w in NUMBERS), None)
        if n is None and explicit_only:
            continue
        if n is None:
            word = m.words[m.start]
            n = 2 if m.plural or word in PLURAL_WORDS or any(w in PLURAL_WORDS for w in before[-2:]) else 1
        counts[m.cls] = max(counts.get(m.cls, 0), n)
    return counts


def judge(caption: str, evidence: Evidence, rules: GroundingRules) -> Verdict:
    mentions = chair_mentions(caption, grounding_table())
    counts = stated_counts(mentions)
    numbered = stated_counts(mentions, explicit_only=True) if rules.overcount_margin else {}
    named = tuple(counts)
    problems: list[str] = []
    level = "sure"
    margin = float("inf")
    if not named:
        return Verdict("unsupported", named, ("names nothing the detectors can check",))
    if evidence.salient and not evidence.salient & set(named):
        problems.append(f"does not name the {' or '.join(sorted(evidence.salient))} in view")
        level = "unsupported"
    for cls, n in counts.items():
        margin = min(margin, evidence.margin(cls, rules))
        if not evidence.has(cls, "likely", rules):
            if rules.hedge_on_any_trace and (evidence.all_counts.get(cls)
                                             or evidence.label_support.get(cls, 0.0) > rules.trace_label):
                problems.append(f"{cls} barely detected")
                level = "likely" if level == "sure" else level
                continue
            problems.append(f"{cls} not detected")
            level = "unsupported"
            continue
        if not evidence.has(cls, "sure", rules):
            problems.append(f"{cls} only weakly detected")
            level = "likely" if level == "sure" else level
        if n > 1 and evidence.count_any(cls) < n:
            problems.append(f"says {n} {cls}, sees {evidence.count_any(cls)}")
            level = "likely" if level == "sure" else level
        elif cls in numbered and len(evidence.sure.get(cls, ())) >= n + rules.overcount_margin:
            problems.append(f"says {n} {cls}, sees {len(evidence.sure[cls])} surely")
            level = "likely" if level == "sure" else level
        other = contradiction(cls, evidence, rules)
        if other:
            problems.append(f"says {cls}, but {other}")
            level, margin = "unsupported", 0.0
    return Verdict(level, named, tuple(problems), margin)


def contradiction(cls: str, evidence: Evidence, rules: GroundingRules) -> str | None:
    """Why the detectors think the named thing is something else, or None."""
    group = next((g for g in CONFUSABLE if cls in g), None)
    if group is None:
        return None
    for name, p in evidence.labels:
        label_cls = coco_class_of_label(name)
        if p >= rules.label_sure and label_cls in group and label_cls != cls:
            return f"ImageNet says {name} ({p:.2f})"
    own = evidence.likely.get(cls, [])
    for other in evidence.objects:
        if other.name == cls or other.name not in group or other.score < rules.sure_for(other.name):
            continue
        if any(iou(other.box, d.box) >= rules.overlap_iou and other.score > d.score for d in own):
            return f"the detector sees a {other.name} there ({other.score:.2f})"
    return None


def coco_class_of_label(name: str) -> str | None:
    classes = chair_objects(name, grounding_table())
    return classes[0] if len(classes) == 1 else None


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
