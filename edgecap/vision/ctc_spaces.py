"""Spaces the recogniser saw but did not say.

PP-OCR's recogniser reads a line as a sequence of columns, each a probability over its characters
(CTC). Between two words it usually emits a space; sometimes the blank wins the columns between
them and the words run together ("COFFEEUNTIL"), although the space character still got a share
of those columns. On the synthetic set (bench/text_eval.py, lines read with every letter right),
the space's highest probability in the blank columns between two letters was at most 0.0011
where the truth keeps them together (2381 pairs) and at least 0.048 where the recogniser ran two
words together (10 of 10); on real photos of signs, between letters of one word in lines scored
>= 0.9, at most 0.005; a rendered "WITH TOTAL" 4 px apart (tests/test_reading.py) got about 0.02.
SPACE_FLOOR sits between them. As a second condition the two characters must stand further apart
than the line's usual character pitch (the 10 run-together spaces: 1.25-1.67 pitches; see
docs/reading.md).
"""
from __future__ import annotations

import numpy as np

SPACE_FLOOR = 0.01


def spaced(text: str, probs: np.ndarray, characters: list[str], floor: float = SPACE_FLOOR) -> str:
    """`text` (greedy CTC over `probs`, columns x characters, index 0 the blank) with a space put
    between two characters wherever the space character reached `floor` in the columns between
    the two characters' own columns, and the two are further apart than the line's median step from
    one character to the next. The text comes back unchanged when it is not the greedy reading of
    `probs` (another decoder) or has no room for a space."""
    if len(text) < 2 or " " not in characters:
        return text
    best = probs.argmax(1)
    starts = np.ones(len(best), bool)
    starts[1:] = best[1:] != best[:-1]
    starts &= best != 0
    cols = np.flatnonzero(starts)
    said = [characters[k] for k in best[cols]]
    if "".join(said) != text:
        return text
    space = probs[:, characters.index(" ")]
    after = np.append(np.flatnonzero(np.diff(best)) + 1, len(best))  # the column after each run of one label
    ends = after[np.searchsorted(after, cols, side="right")]
    inked = [k for k in range(1, len(said)) if not said[k].isspace() and not said[k - 1].isspace()]
    if not inked:
        return text
    pitch = float(np.median([cols[k] - cols[k - 1] for k in inked]))
    out = [said[0]]
    for k in range(1, len(said)):
        # only the columns between the two characters' own runs: next to a space the recogniser did
        # say, the columns of the following letter still give the space a share ("9 p m")
        gap = space[ends[k - 1]:cols[k]]
        if k in inked and cols[k] - cols[k - 1] > pitch and gap.size and gap.max() >= floor:
            out.append(" ")
        out.append(said[k])
    return "".join(out)


class SpacingDecoder:
    """rapidocr's CTC label decoder with `spaced` applied to every line it decodes; the scores are
    its own (a space put in changes no character's confidence). Installed on the recogniser by
    `install`, so every reading of a line -- first look, rescue views, lines cut from a block --
    gets the same spaces."""

    def __init__(self, inner, floor: float = SPACE_FLOOR):
        self.inner, self.floor = inner, floor
        self.character = inner.character

    def __call__(self, preds: np.ndarray, return_word_box: bool = False, **kwargs):
        lines, words = self.inner(preds, return_word_box, **kwargs)
        if return_word_box:  # rapidocr's word boxes are computed from the unspaced text
            return lines, words
        return [(spaced(text, probs, self.character, self.floor), score)
                for (text, score), probs in zip(lines, preds)], words


def install(recogniser, floor: float) -> None:
    """Puts the spacing decoder on a rapidocr TextRecognizer (floor <= 0: leaves it alone)."""
    if floor > 0 and not isinstance(recogniser.postprocess_op, SpacingDecoder):
        recogniser.postprocess_op = SpacingDecoder(recogniser.postprocess_op, floor)
