"""What a candidate caption says beyond the objects the detectors can check, and whether it
is well formed.

* `flaws(caption)`: why a candidate is garbled ("A cat is laying on a window in a cat.",
  "A boy holds a yellow and yellow toy.", "... climbing a large."); a garbled candidate is
  never spoken. The rules were chosen to flag few human captions (measured on the 41,110
  references of the captioned data: see bench/decision_replay.py --flaws).
* `specifics(caption)`: the words no detector here can check: who a person is (age,
  gender), colours and clothing. A sure sentence may not contain them unless the caption
  pool agrees on them (edgecap.caption); otherwise they are said generically
  ("A little boy is wearing a yellow shirt." -> "A person.") or the sentence is hedged.
"""
from __future__ import annotations

import re

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*|'[a-z]+")

ARTICLES = {"a", "an", "the"}
# Words a finished sentence does not end on.
DANGLING = ARTICLES | {"of", "with", "and", "its", "his", "their", "large", "small", "big", "little",
                       "young", "old", "while", "is", "are"}  # not "her": "next to her"
POSSESSIVES = {"its", "his", "her", "their", "my", "your"}
# Words allowed to repeat: function words, people and places said twice in normal speech.
FUNCTION_WORDS = ARTICLES | {"of", "in", "on", "with", "and", "at", "to", "from", "by", "for", "into", "onto", "is",
                             "are", "while", "his", "her", "its", "their", "one", "other", "another", "each",
                             "two", "side", "front", "back", "top", "down", "up", "out", "over", "near", "next",
                             "behind", "as", "it", "he", "she", "they", "who", "that", "which", "has", "have",
                             "holding", "wearing"}

COLOURS = {"red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray", "grey",
           "silver", "gold", "golden", "tan", "blond", "blonde", "dark", "colorful", "colourful", "striped"}
CLOTHING = {"shirt", "shirts", "t-shirt", "jacket", "jackets", "coat", "dress", "dresses", "hat", "hats", "cap",
            "helmet", "helmets", "uniform", "uniforms", "jersey", "jerseys", "pants", "shorts", "jeans", "skirt",
            "sweater", "sweatshirt", "hoodie", "top", "outfit", "costume", "suit", "swimsuit", "bikini", "vest",
            "scarf", "glasses", "sunglasses", "goggles", "gear", "clothes", "clothing", "boots", "shoes", "wetsuit",
            "overalls", "bathing", "trunks", "headband", "bandana", "necklace", "mask", "gloves", "apron",
            "robe", "attire"}  # not tie or backpack: the detector checks those
# Who a person is. Group -> words; a generic person word carries no claim.
PERSON_KINDS = {"man": {"man", "men", "guy", "guys", "gentleman", "gentlemen", "male", "father", "dad",
                        "husband", "boyfriend"},
                "woman": {"woman", "women", "lady", "ladies", "female", "mother", "mom", "wife", "girlfriend"},
                "boy": {"boy", "boys"},
                "girl": {"girl", "girls"},
                "child": {"child", "children", "kid", "kids", "toddler", "toddlers", "baby", "babies", "infant"}}
PERSON_KIND_OF = {w: kind for kind, words in PERSON_KINDS.items() for w in words}
AGE_WORDS = {"little", "young", "old", "older", "elderly", "small", "teenage", "teenager", "adult"}


def words(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


def flaws(caption: str) -> list[str]:
    """Why a caption is not a well-formed sentence (empty when it is)."""
    w = words(caption)
    found = []
    if not w:
        return ["no words"]
    for a, b in zip(w, w[1:]):
        if a == b:
            found.append(f"'{a} {a}'")
        if a in ARTICLES and b in POSSESSIVES | ARTICLES:
            found.append(f"'{a} {b}'")
    for a, conj, b in zip(w, w[1:], w[2:]):
        if conj in ("and", "or") and a == b:
            found.append(f"'{a} {conj} {b}'")
    if w[-1] in DANGLING:
        found.append(f"ends on '{w[-1]}'")
    for i, j, word in _repeats(w):
        found.append(f"'{word}' twice")
    for i, j, word in _same_thing_twice(w):
        found.append(f"'the {word}' said twice")
    for a, b, c in zip(w, w[1:], w[2:] + [""]):
        if a in ("a", "an") and b in PLURAL_NOUNS and c != "'s":
            found.append(f"'{a} {b}'")
    for a, b, c, d in zip(w, w[1:], w[2:], w[3:] + [""]):  # "a red and bed": 5 of the 41,110 references
        if a in ARTICLES and b in COLOURS and c == "and" and d not in COLOURS | ARTICLES | COLOUR_LIKE \
                and not d.endswith("ish"):
            found.append(f"'{b} and {d}'")
    for a, b in zip(w, w[1:]):  # "a dog is jumps": none of the references
        if a in ("is", "are") and b in THIRD_PERSON_VERBS:
            found.append(f"'{a} {b}'")
    return found


# Colour words beyond COLOURS that follow "a red and ..." in human captions.
COLOUR_LIKE = {"beige", "maroon", "navy", "teal", "turquoise", "cream", "khaki", "violet", "multicolored", "multi",
               "multi-colored", "light", "bright", "spotted", "lime", "magenta", "aqua", "peach", "neon", "plaid",
               "camouflage", "checkered", "burgundy", "rust", "copper", "bronze"}
THIRD_PERSON_VERBS = {v + ("es" if v.endswith(("sh", "ch", "ss", "x")) else "s") for v in (
    "jump run play walk sit stand ride climb swim look hold lay lie sleep eat drink carry throw catch kick pull push "
    "watch wait pose smile lean read fly drive dive chase cross hang dig skate ski surf dance sing talk work perform "
    "make take get stare laugh spray grab bite lick follow lead wear splash fetch race roll slide crawl hike wade "
    "bike").split()} | {"flies", "carries", "lies"}


# Plurals the model puts after "a" ("on a leaves", "with a toys"); from its candidates on val.
PLURAL_NOUNS = {"people", "men", "women", "children", "leaves", "feet", "teeth", "mice", "geese", "dogs", "cats",
                "boys", "girls", "kids", "players", "horses", "birds", "cars", "trees", "rocks", "waves", "toys",
                "balls", "flowers", "bikes"}
# Words that make a second "the X" a second thing ("a dog chases another dog").
SECOND_THING = {"another", "other", "second", "both", "each", "different", "same", "than", "while", "where"}
NEAR_REPEAT = 5  # "a street in the street": the second is said within this many words


def _same_thing_twice(w: list[str]):
    """(i, j, word) for a thing (not a person: edgecap.wording.generic says those) named twice
    within a few words as the head of "a/the X", with nothing to tell the two apart: "walking down a
    street in the street", "a laptop with a laptop" (but "a dog and a dog"). 7 of the 41,110 human
    references have it; 2.4% of the model's candidates on 750 val photos."""
    if SECOND_THING & set(w):
        return
    seen: dict[str, int] = {}
    for j, x in enumerate(w):
        if x in FUNCTION_WORDS or len(x) < 3 or x in COLOURS or x in AGE_WORDS or x in PERSON_KIND_OF \
                or x in ("person", "people"):
            continue
        i = seen.get(x)
        seen[x] = j
        if i is None or j - i > NEAR_REPEAT or w[i + 1] == "and":
            continue
        if i > 0 and w[i - 1] in ARTICLES and w[j - 1] in ARTICLES and _is_head(w, i) and _is_head(w, j):
            yield i, j, x
            return


def _is_head(w: list[str], i: int) -> bool:
    nxt = w[i + 1] if i + 1 < len(w) else ""
    return nxt in FUNCTION_WORDS | {"", "is", "are"} or nxt.endswith("ing")


JOINERS = {"and", "while", "who", "which", "where", "as", "another", "other", "second", "both", "whose", "than",
           "but", "one", "two"}


def _repeats(w: list[str]):
    """A noun phrase said twice as a new thing ("a cat is eating a cat", "a table with a table"). People
    do name two of a kind ("a brown dog chases a black dog", "a dog and a dog"): a different word
    before the second, or a joining word between, is not a repeat."""
    last: dict[str, int] = {}
    for j, word in enumerate(w):
        if word in FUNCTION_WORDS or len(word) < 3:
            continue
        i = last.get(word)
        last[word] = j
        if i is None:
            continue
        before_i = w[i - 1] if i > 0 else "a"
        if before_i != w[j - 1] or JOINERS & set(w[i + 1:j]):
            continue
        after_i = w[i + 1] if i + 1 < len(w) else ""
        after_j = w[j + 1] if j + 1 < len(w) else ""
        if after_i != after_j and after_i not in FUNCTION_WORDS | {""} and after_j not in FUNCTION_WORDS | {""}:
            continue
        yield i, j, word


def person_kinds(caption: str) -> set[str]:
    return {PERSON_KIND_OF[x] for x in words(caption) if x in PERSON_KIND_OF}


def specifics(caption: str, keep: frozenset[str] = frozenset()) -> dict[str, set[str]]:
    """The uncheckable claims of a caption: person kinds, colours, clothing (but the words in `keep`)."""
    w = [x for x in words(caption) if x not in keep]
    return {"person": {x for x in w if x in PERSON_KIND_OF},
            "colour": {x for x in w if x in COLOURS}, "clothing": {x for x in w if x in CLOTHING}}


PEOPLE_PLURAL = {"men", "women", "boys", "girls", "children", "kids", "guys", "ladies", "gentlemen", "toddlers",
                 "babies"}
PERSON_NOUNS = set(PERSON_KIND_OF) - {"male", "female"}
_NOT_NOUNS = {"is", "are", "and", "with", "on", "in", "at", "while", "walks", "runs", "sits", "stands", "holding",
              "playing", "running", "walking", "standing", "sitting", "riding", "jumping", "looking", "climbing"}
TOKEN = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*|'[a-z]+|[^\sA-Za-z]")  # words, "'s" and punctuation


def generic(caption: str, keep: frozenset[str] = frozenset()) -> str | None:
    """The caption with its uncheckable specifics said generically, or None when nothing is left to say.

    "A little boy in a yellow shirt is climbing a rock." -> "A person is climbing a rock."
    Person kinds become "person"/"people" (their age words go), colour words go, and a
    clothing phrase ("in a yellow shirt", "wearing a red hat") goes; a caption whose verb is
    the clothing ("is wearing a yellow shirt") has nothing left. `keep`: words to leave as they are.
    """
    t = [x.lower() for x in TOKEN.findall(caption)]
    t = _drop_clothing(t, keep)
    if t is None:
        return None
    out: list[str] = []
    for i, x in enumerate(t):
        if x in keep:
            out.append(x)
        elif x in COLOURS - keep or (x == "and" and i > 0 and t[i - 1] in COLOURS - keep and i + 1 < len(t)
                                     and t[i + 1] in COLOURS - keep):
            nxt = t[i + 1] if i + 1 < len(t) else "."
            chained = nxt in ("and", "or") and i + 2 < len(t) and t[i + 2] in COLOURS
            if x != "and" and not chained and (not nxt.isalpha() or nxt in _NOT_NOUNS):
                if not out or out[-1] != "in":
                    return None  # "the dog is black": the colour is what is said
                out.pop()  # "a man in red is ..." -> "a person is ..."
                if out and out[-1] in ("dressed", "all"):
                    out.pop()
            continue
        elif x in PERSON_NOUNS:
            while out and out[-1] in AGE_WORDS | COLOURS - keep:
                out.pop()
            out.append("people" if x in PEOPLE_PLURAL else "person")
        else:
            out.append(x)
    out = [w for w in out if w not in COLOURS or w in keep]
    for i in range(len(out) - 1):  # "an person" -> "a person", "a old" -> ...
        if out[i] in ("a", "an"):
            out[i] = "an" if out[i + 1][0] in "aeiou" else "a"
    text = " ".join(out)
    out = re.sub(r"\ba person and an? person\b", "two people", text).split()
    words_only = [w for w in out if w[0].isalpha()]
    if len(words_only) < 3 or flaws(" ".join(out)):
        return None
    text = " ".join(out)
    return sentence_case(text)


def sentence_case(text: str) -> str:
    """Tokens joined by spaces, as written: no space before punctuation or "'s", a capital first."""
    text = re.sub(r" (?=[.,;:!?])", "", text).replace(" '", "'")
    return text[0].upper() + text[1:] if text else text


def _drop_clothing(t: list[str], keep: frozenset[str]) -> list[str] | None:
    """Remove "in/wearing/with [a] [adj]* CLOTHING [and [a] [adj]* CLOTHING]*"; None when it is the verb."""
    t = list(t)
    for i, x in enumerate(t):  # whatever is worn is clothing: "is wearing a yellow necklace"
        if x in ("wearing", "wears") and i > 0 and not any(y in CLOTHING for y in t[i + 1:i + 5]):
            if t[i - 1] in ("is", "are") or x == "wears":
                return None
            end = next((k for k in range(i + 1, len(t)) if t[k] in _NOT_NOUNS | {".", ","}), len(t))
            t = t[:i] + t[end:]
            break
    i = 0
    while i < len(t):
        if t[i] in CLOTHING and t[i] not in keep:
            start = i
            while start > 0 and (t[start - 1] in ARTICLES | COLOURS | AGE_WORDS | CLOTHING | {"and", "striped",
                                                                                             "long", "short",
                                                                                             "bright"}):
                start -= 1
            if start == 0 or t[start - 1] not in ("in", "wearing", "with", "dressed", "wears", "and"):
                return None  # "a yellow shirt is ...": the clothing is the subject
            start -= 1
            if t[start] in ("wearing", "wears", "dressed") and start > 0 and t[start - 1] in ("is", "are"):
                return None  # "is wearing a yellow shirt": the clothing is what is said
            if t[start] in ("wears",):
                return None
            end = i + 1
            while end < len(t) and (t[end] in CLOTHING or (t[end] == "and" and end + 1 < len(t)
                                                           and (t[end + 1] in CLOTHING | COLOURS | ARTICLES))):
                end += 1
            while end < len(t) and t[end] in ARTICLES | COLOURS | CLOTHING:
                end += 1
            t = t[:start] + t[end:]
            i = start
        else:
            i += 1
    return t


PREPOSITIONS = {"in", "on", "at", "with", "of", "near", "by", "under", "behind", "from", "into", "onto", "over",
                "through", "across", "along", "down", "up"}


def repaired(caption: str) -> str | None:
    """A candidate whose only flaw is a repeat in its last phrase, without that phrase
    ("A cat is laying on a window in a cat." -> "A cat is laying on a window."); None otherwise."""
    found = flaws(caption)
    if not found or not all(f.endswith("twice") for f in found):
        return None
    t = TOKEN.findall(caption)
    low = [x.lower() for x in t]
    w_index = [i for i, x in enumerate(low) if x[0].isalpha()]
    w = [low[i] for i in w_index]
    first = min(j for _, j, _ in [*_repeats(w), *_same_thing_twice(w)])
    start = next((k for k in range(first - 1, max(first - 4, 0), -1) if w[k] in PREPOSITIONS), None)
    if start is None or any(x not in FUNCTION_WORDS and x not in w[:start] for x in w[start:]):
        return None  # the repeat is not a last phrase that only says again what was said
    cut = w_index[start]
    words_left = [x for x in t[:cut] if x[0].isalpha()]
    if len(words_left) < 3:
        return None
    text = sentence_case(" ".join(t[:cut]).rstrip(" ,") + ".")
    return text if not flaws(text) and words(text)[-1] not in DANGLING | PREPOSITIONS else None
