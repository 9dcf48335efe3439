"""Saying the same thing twice: two captions that name the same things count as one."""
from __future__ import annotations

import re

_STOPWORDS = frozenset("""a an the this that these those there here is are was were be been being has have
had it its of in on at to from by with and or but as into onto over under near next for up out some
very while his her their they he she them one""".split())
# A few caption synonyms, so "a dog on a couch" and "a dog on the sofa" count as one thing.
_SYNONYMS = {"couch": "sofa", "puppy": "dog", "kitten": "cat", "automobile": "car", "bicycle": "bike",
             "men": "man", "women": "woman", "people": "person", "persons": "person", "children": "child",
             "kids": "child", "kid": "child", "lying": "lie", "laying": "lie", "sitting": "sit", "sits": "sit",
             "standing": "stand", "stands": "stand", "photo": "picture", "image": "picture"}

# Two captions whose content-word Jaccard similarity reaches this are "the same thing".
# 0.7 means: with three content words the sets must match (one extra adjective, 3/4,
# still counts as a repeat); with five, one swapped word (4/6 = 0.67, "a man riding a
# bike / horse down a street") is news and is spoken. Missing a real change is worse for
# the listener than hearing a near repeat, so the threshold sits above that case.
REPEAT_THRESHOLD = 0.7


def _lemma(word: str) -> str:
    word = _SYNONYMS.get(word, word)
    for suffix, replacement, min_len in (("ies", "y", 5), ("ing", "", 6), ("ed", "", 5), ("es", "", 5),
                                         ("s", "", 4)):
        if word.endswith(suffix) and len(word) >= min_len and not word.endswith("ss"):
            return _SYNONYMS.get(word[:-len(suffix)] + replacement, word[:-len(suffix)] + replacement)
    return word


def content_words(text: str) -> frozenset[str]:
    """Lower-case words minus function words, crudely lemmatised ("dogs sitting" -> dog, sit)."""
    return frozenset(_lemma(w) for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOPWORDS and len(w) > 1)


def text_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the content words of two sentences (1.0 for two empty ones)."""
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return 1.0 if a.strip().lower() == b.strip().lower() else 0.0
    return len(wa & wb) / len(wa | wb)


def near_duplicate(a: str, b: str, threshold: float = REPEAT_THRESHOLD) -> bool:
    return text_similarity(a, b) >= threshold
