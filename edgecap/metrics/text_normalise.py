"""Caption text normalised as COCO evaluation does: lower case, PTB tokens, punctuation dropped.

With ``java`` on PATH, `tokenize_captions` runs pycocoevalcap's Stanford PTBTokenizer exactly as
in COCO evaluation. Without java, :func:`simple_tokenize` is used; it reproduces the PTB output
on all 41,110 captions of our data set, but can differ on rarer constructs (PTB's full
abbreviation list, unusual quoting), so scores from the two paths are near-identical but not
guaranteed bit-equal. CIDEr-D (edgecap.metrics.cider), CHAIR (edgecap.metrics.chair) and the metrics driver
(edgecap.evaluation.evaluate) all read words through here.
"""
from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Mapping

# Tokens PTBTokenizer produces for punctuation that pycocoevalcap then drops.
_PTB_DROPPED = {"''", "'", "``", "`", '"', ".", "?", "!", ",", ":", ";", "-", "--", "..."}
# PTB rewrites brackets; pycocoevalcap's filter only knows the upper-case forms, so with
# -lowerCase these survive as tokens. We keep that quirk for identical scores.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CONTRACTION = re.compile(r"(?<=[^\W_])(n't|'s|'re|'ll|'ve|'m|'d)\b")
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "wanna": "wan na", "gotta": "got ta"}
_SPLIT_WORDS_RE = re.compile(r"\b(" + "|".join(_SPLIT_WORDS) + r")\b")
_PTB_TOKEN = re.compile(
    r"(?:[^\W\d_]\.)+(?=\s|$)"                     # initials and initialisms: u. u.s.
    r"|[^\W_]+\.(?:com|org|net|edu)\b"             # web addresses
    r"|o'clock|'n'"
    r"|(?:mr|mrs|ms|dr|st|jr|sr|vs)\.(?=\s|$)"     # abbreviations PTB keeps with the dot
    r"|n't|'(?:s|re|ll|ve|m|d)\b"
    r"|\d+(?:[.,:]\d+)+"                           # 3.5, 1,000, 10:30
    r"|[^\W_]+(?:[-/][^\W_]+)*"                    # words, t-shirt, a/c
    r"|\.\.\.|--|``|''|\S"
)


def simple_tokenize(text: str) -> str:
    """Pure-python stand-in for PTBTokenizer(-lowerCase) + pycocoevalcap's punctuation filter."""
    text = text.lower().replace("\n", " ")
    text = _CONTRACTION.sub(r" \1", text)
    text = _SPLIT_WORDS_RE.sub(lambda m: _SPLIT_WORDS[m.group(1)], text)
    tokens = (_BRACKETS.get(t, t) for t in _PTB_TOKEN.findall(text))
    return " ".join(t for t in tokens if t not in _PTB_DROPPED)


def java_available() -> bool:
    return shutil.which("java") is not None


def tokenize_captions(captions: Mapping, use_java: bool | None = None) -> dict:
    """Tokenise ``{key: [caption, ...]}`` -> ``{key: [tokenised, ...]}`` (same keys and order)."""
    if use_java is None:
        use_java = java_available()
    if use_java:
        try:
            return _ptb_tokenize(captions)
        except Exception as error:  # unwritable package dir, JVM failure, ...
            warnings.warn(f"PTBTokenizer failed ({error}); using the python tokenizer", stacklevel=2)
    return {key: [simple_tokenize(c) for c in caps] for key, caps in captions.items()}


def _ptb_tokenize(captions: Mapping) -> dict:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    wrapped = {key: [{"caption": c} for c in caps] for key, caps in captions.items()}
    tokenized = PTBTokenizer().tokenize(wrapped)
    for key, caps in captions.items():  # PTB aligns by line, so check nothing slipped
        if len(tokenized.get(key, ())) != len(caps):
            raise RuntimeError(f"PTB output misaligned for {key!r}")
    return {key: tokenized[key] for key in captions}
