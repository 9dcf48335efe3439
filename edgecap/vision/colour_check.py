"""Does the photo contradict a colour a caption says? ("A red car" over a blue car.)

The captioner learned colours from Flickr8k, where a car is often red and a dog often black;
on other photos the whole candidate pool can agree on a colour that is not there. Each colour
word is checked against the pixels of the thing it describes: the box of the detected object
its noun names, or the whole photo for nouns no detector sees ("green grass"). A colour is kept
when at least MIN_SHARE of those pixels belong to a family the word allows: a contradiction
test, not a proof. bench/colour_check_fit.py measures it on every candidate's colour words: on
604 train photos the colours it removes at 0.1 are used by a human reference 0.34 of the time,
those it keeps 0.47 (233 of 869 removed); on val 0.23 vs 0.43 (538 of 1,896). The references
leave many true colours unsaid, so both are lower bounds; the curve has no knee, and 0.1 was
kept as the share below which the photo plainly shows something else.
"""
from __future__ import annotations

import re

import cv2
import numpy as np

from edgecap.metrics.chair import chair_mentions

MIN_SHARE = 0.1
CENTRE = 0.6  # the middle of a box: its edges are mostly background
NEAR = 4  # a colour describes the first thing named within this many words after it

FAMILIES = ("black", "gray", "white", "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown")
# What each caption word allows. Neighbouring families are allowed: light, shade and camera white
# balance shift hues, and people call a tan dog "brown" or "golden".
ALLOWED = {
    "red": {"red", "pink", "brown"}, "pink": {"pink", "red", "purple"}, "orange": {"orange", "red", "yellow", "brown"},
    "yellow": {"yellow", "orange"}, "gold": {"yellow", "orange", "brown"}, "golden": {"yellow", "orange", "brown"},
    "blond": {"yellow", "orange", "brown", "white"}, "blonde": {"yellow", "orange", "brown", "white"},
    "tan": {"orange", "yellow", "brown", "white", "gray"}, "brown": {"brown", "orange", "red", "black"},
    "green": {"green", "cyan", "yellow"}, "blue": {"blue", "cyan", "purple"}, "purple": {"purple", "blue", "pink"},
    "black": {"black", "gray"}, "dark": {"black", "gray", "brown"}, "white": {"white", "gray"},
    "gray": {"gray", "white", "black"}, "grey": {"gray", "white", "black"}, "silver": {"gray", "white"},
}
# Colour words with no single family: "colorful" needs several hues; "striped" cannot be checked.
UNCHECKABLE = {"striped"}


def pixel_families(rgb: np.ndarray) -> np.ndarray:
    """The colour family index (into FAMILIES) of each pixel of a small copy of rgb."""
    small = cv2.resize(rgb, (24, 24), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int32)
    hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    family = np.full(len(hsv), FAMILIES.index("gray"))
    grey = (sat < 50) | (val < 45)
    family[grey & (val < 60)] = FAMILIES.index("black")
    family[grey & (val >= 180)] = FAMILIES.index("white")
    bands = np.array([8, 20, 33, 78, 95, 130, 148, 170, 180])
    names = np.array([FAMILIES.index(n) for n in ("red", "orange", "yellow", "green", "cyan", "blue", "purple",
                                                   "pink", "red")])
    chroma = names[np.searchsorted(bands, hue, side="right")]
    warm = (hue < 25) | (hue >= 170)
    chroma = np.where(warm & (val < 150) & (sat < 200), FAMILIES.index("brown"), chroma)
    return np.where(grey, family, chroma)


def region(rgb: np.ndarray, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """The middle CENTRE of a 0-1 box (or the whole photo)."""
    if box is None:
        return rgb
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = (1 - CENTRE) / 2 * (x1 - x0), (1 - CENTRE) / 2 * (y1 - y0)
    left, right = int((x0 + mx) * w), int(np.ceil((x1 - mx) * w))
    top, bottom = int((y0 + my) * h), int(np.ceil((y1 - my) * h))
    crop = rgb[max(0, top):max(top + 1, bottom), max(0, left):max(left + 1, right)]
    return crop if crop.size else rgb


def shares(rgb: np.ndarray) -> dict[str, float]:
    counts = np.bincount(pixel_families(rgb), minlength=len(FAMILIES)) / (24 * 24)
    return dict(zip(FAMILIES, counts.tolist()))


def colour_share(word: str, found: dict[str, float]) -> float:
    """How much of a region the word can describe (1.0 for words that name no family)."""
    if word in ("colorful", "colourful"):
        return float(sum(sorted((v for k, v in found.items() if k not in ("black", "gray", "white")),
                                reverse=True)[1:3]))  # the second and third hues: several colours
    if word not in ALLOWED:
        return 1.0
    return float(sum(found[f] for f in ALLOWED[word]))


def colour_targets(caption: str, table) -> list[tuple[str, str | None]]:
    """(colour word, COCO class of the thing it describes or None) for each colour word."""
    mentions = chair_mentions(caption, table)
    words = mentions[0].words if mentions else tuple(re.findall(r"[a-z]+", caption.lower()))  # chair's split
    out = []
    for i, word in enumerate(words):
        if word in ALLOWED or word in UNCHECKABLE or word in ("colorful", "colourful"):
            after = [m for m in mentions if i < m.start <= i + NEAR]
            out.append((word, after[0].cls if after else None))
    return out


def unsupported_colours(caption: str, rgb: np.ndarray, boxes: dict[str, tuple], table,
                        min_share: float = MIN_SHARE, cache: dict | None = None) -> set[str]:
    """The colour words of caption that the pixels of what they describe do not bear out.

    boxes: COCO class -> the 0-1 box of its best detection (classes not detected are absent);
    cache: box -> its colour shares, kept across the candidates of one photo."""
    cache = {} if cache is None else cache
    bad = set()
    for word, cls in colour_targets(caption, table):
        if word in UNCHECKABLE:
            bad.add(word)
            continue
        box = boxes.get(cls) if cls else None
        if box not in cache:
            cache[box] = shares(region(rgb, box))
        if colour_share(word, cache[box]) < min_share:
            bad.add(word)
    return bad
