"""CHAIR (Rohrbach et al. 2018): which COCO objects a caption names, and how many of them are not there.

CHAIR_s is the share of captions that name an object absent from the image, CHAIR_i the share
of object mentions that are; with them, micro-averaged object precision/recall/F1. With no
segmentation data, an image's ground-truth objects are the COCO classes named in any of its
reference captions. The same class/synonym table finds a caption's claims for grounding
(edgecap.vision.grounding) and for the decision metrics (edgecap.evaluation.decision_metrics).
"""
from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# The 80 COCO classes with their most common caption words; used when no synonyms file
# is given. Format of the CHAIR synonyms file (class first, then synonyms), except that
# ";" also separates classes and a line ending in "," continues on the next.
BUILTIN_SYNONYMS = """\
person, people, man, woman, boy, girl, child, children, kid, baby, adult, guy, lady, player,
  skier, snowboarder, skateboarder, surfer, rider, biker, cyclist, bicyclist, worker, chef, officer,
  policeman, police officer, teenager, toddler, gentleman, mother, father, crowd, tourist, pedestrian,
  family, spectator, student, soldier
bicycle, bike, tricycle, unicycle; car, automobile, van, minivan, sedan, suv, taxi, cab, jeep
motorcycle, motorbike, motor bike, motor cycle, scooter, moped, dirt bike
airplane, plane, jet, aircraft, airliner, jetliner, air plane; bus, minibus, trolley
train, locomotive, tram, subway; truck, pickup, lorry, firetruck, fire truck
boat, ship, sailboat, yacht, canoe, kayak, ferry, vessel
traffic light, traffic signal, stop light, stoplight, street light, streetlight
fire hydrant, hydrant; stop sign; parking meter; bench
bird, seagull, gull, duck, goose, pigeon, parrot, owl, swan, sparrow, pelican
cat, kitten, kitty; dog, puppy, pup, doggy, doggie, canine; horse, pony, foal, stallion, mare
sheep, lamb, ram; cow, cattle, calf, bull, ox, oxen; elephant; bear, grizzly, polar bear; zebra; giraffe
backpack, knapsack; umbrella, parasol; handbag, purse, briefcase, wallet; tie, necktie, bow tie
suitcase, luggage, suit case; frisbee; skis, ski; snowboard; sports ball, ball; kite
baseball bat, bat; baseball glove, mitt; skateboard; surfboard; tennis racket, racket, racquet
bottle; wine glass; cup, mug; fork; knife; spoon; bowl; banana; apple
sandwich, burger, hamburger, sub; orange; broccoli; carrot; hot dog, hotdog; pizza
donut, doughnut; cake, cupcake; chair, stool; couch, sofa; potted plant, houseplant, house plant
bed; dining table, table; toilet; tv, television; laptop, computer; mouse; remote, remote control
keyboard; cell phone, phone, cellphone, smartphone, mobile phone; microwave; oven, stove, stove top oven
toaster; sink; refrigerator, fridge; book; clock; vase; scissors; teddy bear, teddy
hair drier, hair dryer, hairdryer, blow dryer; toothbrush
"""

# Phrases that must win over their last word (a toilet seat is not a chair); added to
# every table whose target class exists.
_EXTRA_PHRASES = {
    "toilet seat": "toilet", "hair dryer": "hair drier", "hotdog": "hot dog",
    "tennis racquet": "tennis racket", "soccer ball": "sports ball", "tennis ball": "sports ball",
}
_IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "children": "child", "people": "person",
    "mice": "mouse", "geese": "goose", "oxen": "ox", "teeth": "tooth", "feet": "foot",
}
ANIMAL_CLASSES = {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}
# "baby elephant" is an elephant, not a person and an elephant.
_ANIMAL_MODIFIERS = {"baby", "adult", "mother"}
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ChairTable:
    classes: tuple[str, ...]
    phrase_to_class: dict[tuple[str, ...], str]  # ("hot", "dog") -> "hot dog", ("dog",) -> "dog"
    vocabulary: frozenset[str]  # every word of every synonym, to guide singularisation
    max_phrase_words: int


def build_table(entries: Iterable[list[str]]) -> ChairTable:
    classes: list[str] = []
    phrase_to_class: dict[tuple[str, ...], str] = {}
    for names in entries:
        cls = names[0]
        if cls not in classes:
            classes.append(cls)
        for name in names:
            phrase_to_class.setdefault(tuple(name.split()), cls)  # first class wins
    for phrase, cls in _EXTRA_PHRASES.items():
        if cls in classes:
            phrase_to_class.setdefault(tuple(phrase.split()), cls)
    vocabulary = frozenset(word for phrase in phrase_to_class for word in phrase)
    longest = max(len(phrase) for phrase in phrase_to_class)
    return ChairTable(tuple(classes), phrase_to_class, vocabulary, longest)


def parse_synonym_lines(lines: Iterable[str]) -> list[list[str]]:
    entries = ([" ".join(name.lower().split()) for name in line.split(",")] for line in lines)
    return [names for names in ([n for n in entry if n] for entry in entries) if names]


@functools.lru_cache(maxsize=8)
def _load_table_cached(path: str | None) -> ChairTable:
    if path is None:
        text = BUILTIN_SYNONYMS.replace(",\n", ",").replace(";", "\n")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return build_table(parse_synonym_lines(text.splitlines()))


def load_chair_table(path: str | Path | None = None) -> ChairTable:
    """CHAIR class/synonym table from a synonyms file, or the built-in one if absent."""
    if path is not None and not Path(path).is_file():
        warnings.warn(f"CHAIR synonyms file {path} not found; using the built-in table", stacklevel=2)
        path = None
    return _load_table_cached(None if path is None else str(Path(path).resolve()))


def singular(word: str, vocabulary: frozenset[str]) -> str:
    """Map a plural to the singular form present in the synonym vocabulary, if any."""
    if word in vocabulary:
        return word
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    candidates = []
    if word.endswith("ies"):  # ponies -> pony, doggies -> doggie (never skies -> ski)
        candidates = [word[:-3] + "y", word[:-1]]
    elif word.endswith("ves"):  # knives -> knife, calves -> calf
        candidates = [word[:-3] + "f", word[:-3] + "fe", word[:-1]]
    elif word.endswith("es"):  # horses -> horse, buses -> bus, glasses -> glass
        candidates = [word[:-1], word[:-2]]
    elif word.endswith("s") and not word.endswith("ss"):
        candidates = [word[:-1]]
    return next((c for c in candidates if c in vocabulary), word)


def chair_objects(caption: str, table: ChairTable | None = None) -> list[str]:
    """COCO classes mentioned in ``caption``, in order and with repeats.

    Multi-word synonyms are matched before single words (longest first), so "hot dog"
    is a hot dog and "teddy bear" is not a bear.
    """
    return [mention.cls for mention in chair_mentions(caption, table)]


@dataclass(frozen=True)
class Mention:
    cls: str
    start: int  # index of its first word in ``words``
    plural: bool  # the caption's word was a plural ("dogs", "people")
    words: tuple[str, ...]  # the caption's words, lower case, after removing "'s"
    length: int = 1  # how many of those words it spans ("dining table": 2)


def chair_mentions(caption: str, table: ChairTable | None = None) -> list[Mention]:
    """Like :func:`chair_objects`, with where each mention is and whether it is plural."""
    table = table or load_chair_table()
    raw = _WORD.findall(re.sub(r"'s\b", "", caption.lower()))
    words = [singular(word, table.vocabulary) for word in raw]
    found, i = [], 0
    while i < len(words):
        if (words[i] in _ANIMAL_MODIFIERS and i + 1 < len(words)
                and table.phrase_to_class.get((words[i + 1],)) in ANIMAL_CLASSES):
            i += 1
            continue
        for length in range(min(table.max_phrase_words, len(words) - i), 0, -1):
            cls = table.phrase_to_class.get(tuple(words[i:i + length]))
            if cls is not None:
                plural = any(r != w or r in _IRREGULAR_PLURALS for r, w in zip(raw[i:i + length], words[i:i + length]))
                found.append(Mention(cls, i, plural, tuple(raw), length))
                i += length
                break
        else:
            i += 1
    return found


def chair_metrics(predictions: Mapping[str, str], references: Mapping[str, list[str]],
                  table: ChairTable | None = None) -> dict[str, float | None]:
    """CHAIR_s, CHAIR_i (object mentions, with repeats) and micro object P/R/F1."""
    table = table or load_chair_table()
    mentions = hallucinated = captions_hallucinating = 0
    true_pos = false_pos = false_neg = 0
    for key, caption in predictions.items():
        truth = {obj for ref in references[key] for obj in chair_objects(ref, table)}
        mentioned = chair_objects(caption, table)
        wrong = [obj for obj in mentioned if obj not in truth]
        mentions += len(mentioned)
        hallucinated += len(wrong)
        captions_hallucinating += bool(wrong)
        predicted = set(mentioned)
        true_pos += len(predicted & truth)
        false_pos += len(predicted - truth)
        false_neg += len(truth - predicted)
    precision = ratio(true_pos, true_pos + false_pos)
    recall = ratio(true_pos, true_pos + false_neg)
    # F1 = 2tp / (2tp + fp + fn), defined when both precision and recall are.
    f1 = None if None in (precision, recall) else ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg)
    return {
        "chair_s": ratio(captions_hallucinating, len(predictions)),
        "chair_i": ratio(hallucinated, mentions),
        "object_precision": precision, "object_recall": recall, "object_f1": f1,
    }


def ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator
