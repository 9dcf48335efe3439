"""Caption scores used while building a model: checkpoint selection, the SPARC sweep and
the self-critical reward.

Every CIDEr number here is edgecap's CIDEr-D (edgecap/metrics/cider.py, which matches
pycocoevalcap's to 1e-9 on the same tokens) over edgecap's caption tokenizer: the metric
and the words the model card reports, not a second implementation.
"""
from __future__ import annotations

from pathlib import Path

from edgecap.metrics.chair import chair_metrics, chair_objects, load_chair_table
from edgecap.metrics.cider import CiderD


def cider_d(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus CIDEr-D as pycocoevalcap computes it: idf from these references, no end token."""
    scorer = CiderD(references, end_token=False)
    return sum(scorer.score(p, i) for i, p in enumerate(predictions)) / max(len(predictions), 1)


def score(predictions: list[str], references: list[list[str]], synonyms: Path | None) -> dict[str, float]:
    """CIDEr-D, CHAIR (edgecap.metrics.chair), mean length and distinct words of the predictions."""
    preds = {str(i): p for i, p in enumerate(predictions)}
    refs = {str(i): r for i, r in enumerate(references)}
    chair = chair_metrics(preds, refs, load_chair_table(synonyms))
    words = [w for p in predictions for w in p.lower().split()]
    return {"cider": cider_d(predictions, references), **chair,
            "mean_length": len(words) / max(len(predictions), 1), "vocab_size": len(set(words))}


def rounded(metrics: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}


class HallucinationCounter:
    """COCO objects a caption names that none of the photo's references names."""

    def __init__(self, references: list[list[str]], synonyms: Path | None):
        self.table = load_chair_table(synonyms)
        self.truth = [{o for r in refs for o in chair_objects(r, self.table)} for refs in references]

    def __call__(self, caption: str, photo: int) -> int:
        return sum(o not in self.truth[photo] for o in chair_objects(caption, self.table))
