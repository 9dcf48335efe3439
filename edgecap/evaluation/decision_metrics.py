"""How truthful the spoken decisions are (see edgecap.caption): coverage, CHAIR over what is said
as sure, precision of hedges, and a risk-coverage curve.

* coverage: share of images whose sentence is "sure"; unknown_rate: share "unknown".
* chair_s_sure / chair_i_sure: CHAIR_s / CHAIR_i over the sure sentences only.
* hedged_precision: of the things hedged sentences name (COCO classes, and ImageNet names
  such as "space shuttle"), the share the references mention. A COCO class counts when a
  reference names it (CHAIR synonyms); another name when one of its words is in a reference.
* risk-coverage: images ordered by the grounding margin of the model's own caption; at
  each coverage, the CHAIR_s of those captions. The operating point is the sure share.
"""
from __future__ import annotations

from collections.abc import Mapping
from collections import Counter
from pathlib import Path

from edgecap.metrics.chair import ChairTable, chair_metrics, chair_objects, load_chair_table, ratio, singular
from edgecap.metrics.text_normalise import simple_tokenize

DECISION_KEYS = ("coverage", "chair_s_sure", "chair_i_sure", "hedged_precision", "unknown_rate", "n_sure",
                 "n_hedged", "n_unknown")


def decision_metrics(spoken: Mapping[str, object], references: Mapping[str, list[str]],
                     table: ChairTable | None = None) -> dict[str, float | int | None]:
    """``spoken``: key -> object with caption, confidence, named (edgecap.caption.SpokenCaption)."""
    table = table or load_chair_table()
    n = len(spoken)
    hedge_named = hedge_right = 0
    counts = Counter(s.confidence for s in spoken.values())
    for key, s in spoken.items():
        if s.confidence == "hedged":
            refs = references[key]
            truth = {obj for ref in refs for obj in chair_objects(ref, table)}
            for name in s.named:
                hedge_named += 1
                hedge_right += mentioned(name, refs, truth, table)
    sure = counts["sure"]
    unknown = n - sure - counts["hedged"]
    chair = chair_metrics({k: s.caption for k, s in spoken.items() if s.confidence == "sure"}, references, table)
    return {"coverage": ratio(sure, n), "chair_s_sure": chair["chair_s"], "chair_i_sure": chair["chair_i"],
            "hedged_precision": ratio(hedge_right, hedge_named), "unknown_rate": ratio(unknown, n),
            "n_sure": sure, "n_hedged": counts["hedged"], "n_unknown": unknown}


def mentioned(name: str, refs: list[str], truth: set[str], table: ChairTable) -> bool:
    if name in table.classes:
        return name in truth
    classes = chair_objects(name, table)
    if len(classes) == 1:  # an ImageNet name that is a COCO class ("teddy bear", "laptop")
        return classes[0] in truth
    words = {singular(w, table.vocabulary) for ref in refs for w in simple_tokenize(ref).split()}
    return any(singular(w, table.vocabulary) in words for w in simple_tokenize(name).split())


def risk_coverage(spoken: Mapping[str, object], references: Mapping[str, list[str]],
                  table: ChairTable | None = None) -> list[tuple[float, float]]:
    """(coverage, CHAIR_s of the model's captions at that coverage), most supported first."""
    table = table or load_chair_table()
    order = sorted(spoken, key=lambda k: -spoken[k].support)
    points, wrong = [], 0
    for i, key in enumerate(order, 1):
        truth = {obj for ref in references[key] for obj in chair_objects(ref, table)}
        wrong += any(o not in truth for o in chair_objects(spoken[key].model_caption, table))
        points.append((i / len(order), wrong / i))
    return points


def plot_risk_coverage(curves: dict[str, tuple[list[tuple[float, float]], tuple[float, float | None]]],
                       path) -> None:
    """curves: label -> (risk-coverage points, (coverage, chair_s_sure) operating point)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for i, (label, (points, (coverage, risk))) in enumerate(curves.items()):
        if not points:
            continue
        axes.plot([p[0] for p in points], [p[1] for p in points], color=f"C{i}", label=label)
        if coverage is not None and risk is not None:
            axes.plot([coverage], [risk], "o", color=f"C{i}")
    axes.set_xlabel("coverage (share of photos captioned)")
    axes.set_ylabel("CHAIR_s (captions naming an absent object)")
    axes.set_title("Risk-coverage; dots: what is said as sure", fontsize=9)
    axes.set_xlim(0, 1)
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(Path(path), format="png", dpi=120)


def source_group(source: str | None) -> str:
    """coco-val2017 / coco-train2017 -> coco; flickr8k -> flickr8k."""
    if not source:
        return "unknown"
    return "coco" if source.startswith("coco") else source
