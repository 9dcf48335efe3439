"""Hedged sentences built from the detectors' evidence alone, when no candidate caption is supported:
"Probably a bear.", "I'm not sure. I can see a cup and a table.", "I can't tell what this is."

edgecap.caption decides when one is spoken; this module only words it.
"""
from __future__ import annotations

from edgecap.vision.grounding import Evidence, GroundingRules, coco_class_of_label

CANT_TELL = "I can't tell what this is."
SPOKEN = {"dining table": "table", "tv": "television", "sports ball": "ball", "cell phone": "phone",
          "hair drier": "hair dryer", "skis": "pair of skis", "remote": "remote control"}
PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "pairs of skis",
           "scissors": "scissors", "bus": "buses", "couch": "couches", "sandwich": "sandwiches",
           "toothbrush": "toothbrushes", "wine glass": "wine glasses", "dining table": "tables"}
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}


def probably(caption: str) -> str:
    text = caption.strip()
    if not text:
        return CANT_TELL
    return "Probably " + text[0].lower() + text[1:]


def object_phrase(cls: str, count: int, where: str = "") -> str:
    if count >= 2:
        name = PLURALS.get(cls) or SPOKEN.get(cls, cls) + ("es" if cls.endswith(("s", "sh", "ch", "x")) else "s")
        phrase = f"{COUNT_WORDS.get(count, 'several')} {name}"
    else:
        name = SPOKEN.get(cls, cls)
        phrase = ("an " if name[0] in "aeiou" else "a ") + name
    return f"{phrase} {where}".strip()


def position(dets) -> str:
    """'on the left' / 'on the right' when every box centre is on that side, else ''."""
    centres = [(d.box[0] + d.box[2]) / 2 for d in dets]
    if centres and max(centres) < 0.4:
        return "on the left"
    if centres and min(centres) > 0.6:
        return "on the right"
    return ""


def _join(phrases: list[str], word: str = "and") -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + f" {word} " + phrases[-1]


def evidence_statement(evidence: Evidence, rules: GroundingRules, perceiver=None, chance=None
                       ) -> tuple[str, tuple[str, ...]]:
    """A hedged sentence from the detections and ImageNet labels alone, and what it names.

    chance: name -> probability that a describer mentions it (edgecap.vision.salience), or None."""
    # Name what is seen surely; only when nothing is, the likely things (fewer of them). With
    # `chance`: the likely things a describer would mention, most likely first.
    seen = evidence.sure or (evidence.likely if rules.hedge_likely_objects else {})
    if chance is not None:
        seen = {c: d for c, d in evidence.likely.items() if chance(c) >= rules.mention_name_at}
    ranked = sorted(seen.items(), key=lambda kv: -kv[1][0].score)
    if "person" not in seen and evidence.faces and (chance is None or chance("person") >= rules.mention_name_at):
        ranked.append(("person", []))
    if chance is not None:
        ranked.sort(key=lambda kv: -chance(kv[0]))
    ranked = ranked[:rules.hedge_max_named if evidence.sure else max(rules.hedge_max_named - 1, 1)]
    phrases = [object_phrase(cls, evidence.count(cls), position(dets) if i == 0 else "")
               for i, (cls, dets) in enumerate(ranked)]
    named = [cls for cls, _ in ranked]

    def spoken_label(name: str) -> str:
        return perceiver.head.phrase(name) if perceiver is not None else f"a {name}"

    labels = [(n, p) for n, p in evidence.labels if coco_class_of_label(n) not in named
              and (chance is None or chance(n) >= rules.mention_name_at)]
    strong = [(n, p) for n, p in labels if p >= rules.label_sure][:1]
    weak = [(n, p) for n, p in labels if p >= rules.label_likely][:2]
    if strong:
        name = strong[0][0]
        sentence = f"Probably {spoken_label(name)}."
        if phrases:
            sentence += f" I can see {_join(phrases)}."
        return sentence, (name, *named)
    if phrases:
        top_cls, top_dets = ranked[0]
        if len(ranked) == 1 and evidence.has(top_cls, "sure", rules):
            return f"Probably {phrases[0]}.", tuple(named)
        return f"I'm not sure. I can see {_join(phrases)}.", tuple(named)
    if weak and rules.hedge_might_be:
        return f"It might be {_join([spoken_label(n) for n, _ in weak], 'or')}.", tuple(n for n, _ in weak)
    return CANT_TELL, ()
