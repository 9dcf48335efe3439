"""What a sure sentence says beyond the things the detectors check: what they do and where.

"A car is driving through the street." names a car (checked) and says "driving" and "street"
(checked by nothing). Such a word is kept only when the model says it consistently: when enough
of the photo's candidate captions say it, or enough of the captions of the most similar train
photos (the caption memory's neighbours) do. Otherwise the sentence ends before the phrase that
holds it ("A car is driving."), or, with no phrase left, says what is seen ("There is a car.").

On Flickr8k val, a reference uses 47.6% of the action and place words of the model's sure
sentences; it uses 26% of the 235 this rule cuts and 50.5% of the 1,705 it keeps (bench/decision_replay.py, the
"deta" column; the model card has the trade-off).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from edgecap.metrics.chair import chair_mentions
from edgecap.wording import (AGE_WORDS, COLOURS, DANGLING, FUNCTION_WORDS, PERSON_KIND_OF, PREPOSITIONS, TOKEN,
                             flaws, sentence_case, words)

# Words that start a new phrase of the tail: the verb, a place, a second clause.
PHRASE_STARTS = PREPOSITIONS - {"of"} | {"is", "are", "while", "and", "as", "who", "that", "next", "beside",
                                        "between", "against", "past", "around", "toward", "towards", "outside",
                                        "inside", "during", "after", "before", "behind", "underneath", "beneath"}
# Words that claim nothing a reader could find false on their own.
NO_CLAIM = FUNCTION_WORDS | PHRASE_STARTS | COLOURS | AGE_WORDS | set(PERSON_KIND_OF) | {"off", "away", "together",
    "person", "people", "group", "front", "side", "there", "some", "one", "two", "three", "four", "several",
    "many", "large", "big", "small", "little", "very", "something", "are", "is", "each", "other", "s"}
MANY = {"two", "three", "four", "five", "several", "many", "some"}  # "There are ..."


def stem(word: str) -> str:
    """A crude stem, enough to match "sits" with "sitting" and "drives" with "driving"."""
    for suffix in ("ing", "es", "s", "ed", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word[-1] == word[-2] else word


def stems(text: str) -> frozenset[str]:
    return frozenset(stem(w) for w in words(text))


def claims(word: str) -> bool:
    """Whether a word (not one naming a thing the detectors check) says something about the scene."""
    return len(word) > 2 and word[0].isalpha() and word not in NO_CLAIM


def unchecked_words(caption: str, table) -> list[str]:
    """The caption's words that claim something no detector checks ("driving", "street")."""
    mentions = chair_mentions(caption, table)
    w = mentions[0].words if mentions else tuple(words(caption))
    checked = _checked(mentions)
    return [x for i, x in enumerate(w) if i not in checked and claims(x)]


def _checked(mentions) -> set[int]:
    """Word positions inside a mention of a thing the detectors check."""
    return {m.start + k for m in mentions for k in range(m.length)}


def agreement(pool: Sequence[str], neighbours: Sequence[str]) -> Callable[[str], tuple[float, float]]:
    """word -> (share of the candidates that say it, share of the neighbours' captions that do)."""
    pool_stems = [stems(t) for t in pool]
    neighbour_stems = [stems(t) for t in neighbours]

    def share(word: str) -> tuple[float, float]:
        s = stem(word)
        return (sum(s in p for p in pool_stems) / max(len(pool_stems), 1),
                sum(s in n for n in neighbour_stems) / max(len(neighbour_stems), 1))
    return share


def supported_part(caption: str, supported: Callable[[str], bool], table, verbs: bool = True) -> str:
    """The caption without its first phrase holding an unsupported claim and all that follows.

    The subject (up to the first thing the detectors check) always stays. With nothing after it
    left, the sentence says what is there ("There is a car."). `table`: the CHAIR table whose
    mentions the detectors check."""
    tokens = TOKEN.findall(caption.strip())
    while tokens and not tokens[-1][0].isalpha():
        tokens.pop()
    low = [t.lower() for t in tokens]
    word_at = [i for i, t in enumerate(low) if t[0].isalpha()]
    mentions = chair_mentions(caption, table)
    if not mentions or len(word_at) != len(words(caption)):
        return caption  # nothing checked to keep, or tokens and words do not line up: leave it
    after = mentions[0].start + mentions[0].length
    head_end = word_at[after] if after < len(word_at) else len(low)
    checked = {word_at[i] for i in _checked(mentions)}
    starts = [i for i in range(head_end, len(low)) if low[i] in PHRASE_STARTS or i == head_end]

    def unsupported(a: int, b: int) -> bool:  # the phrase tokens[a:b] claims what the model does not say again
        if not verbs and (low[a] in ("is", "are") or a == head_end):
            return False
        return any(claims(low[i]) and not supported(low[i]) for i in range(a, b) if i not in checked)
    cut = next((a for a, b in zip(starts, starts[1:] + [len(low)]) if unsupported(a, b)), None)
    if cut is None:
        return caption
    kept = tokens[:cut]
    while len(kept) > head_end and (low[len(kept) - 1] in DANGLING | PREPOSITIONS | {","}):
        kept.pop()  # "A car is in" -> "A car"
    if len(kept) <= head_end:
        return there_is(tokens[:head_end], mentions[0].plural)
    text = sentence_case(" ".join(kept)) + "."
    return text if not flaws(text) else there_is(tokens[:head_end], mentions[0].plural)


def there_is(head: list[str], plural: bool) -> str:
    first = head[0].lower() if head else ""
    verb = "are" if first in MANY or (plural and first not in ("a", "an")) else "is"
    return sentence_case(" ".join(["there", verb, first, *head[1:]])) + "."
