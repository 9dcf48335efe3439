"""`edgecap eval`: caption a captioned photo set with one or more bundles and score them.

    edgecap eval --data ../shared/data/captioned --split val
    edgecap eval --data DIR --variant student=models/edgecap-base --variant student-nosparc=models/edgecap-base:off \
        --variant student-beam=models/edgecap-base:norerank --json metrics.json --markdown table.md --plot metrics.png
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from edgecap.progress import Progress

BATCH = 16


@dataclass(frozen=True)
class Variant:
    name: str
    model: Path | None
    calibrate: bool
    rerank: bool = True


def parse_variant(text: str) -> Variant:
    """'name=MODEL_DIR[:FLAGS]', FLAGS comma-separated: off (SPARC off), norerank (beam caption as is)."""
    name, _, rest = text.partition("=")
    if not name or not rest:
        raise ValueError(f"--variant wants NAME=MODEL_DIR[:off][,norerank], got {text!r}")
    path, _, flags = rest.partition(":")
    flags = {f for f in flags.split(",") if f}
    if not flags <= {"on", "off", "norerank"}:
        raise ValueError(f"--variant flags are on, off and norerank, got {sorted(flags)}")
    return Variant(name, Path(path), "off" not in flags, "norerank" not in flags)


def read_split(data: Path, split: str | None) -> list[dict]:
    """Records of DIR/captions.jsonl (all of them when split is None)."""
    path = Path(data) / "captions.jsonl"
    if not path.is_file():
        raise ValueError(f"{data} has no captions.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    if not rows:
        raise ValueError(f"no records in {path}" + (f" for split {split!r}" if split else ""))
    return rows


def caption_records(captioner, records: list[dict], root: Path, options, label: str,
                    progress: bool | None = None) -> dict[str, object]:
    """file -> the spoken decision (edgecap.caption.SpokenCaption) for each readable record."""
    from edgecap.caption import describer_for
    from edgecap.core.image import ImageError, read_image

    describer = describer_for(captioner)
    spoken: dict[str, object] = {}
    bar = Progress(len(records), label, progress)
    for i in range(0, len(records), BATCH):
        chunk, images = [], []
        for r in records[i:i + BATCH]:
            try:
                images.append(read_image(root / r["file"]))
                chunk.append(r)
            except ImageError as exc:
                print(f"edgecap: warning: {exc}; skipped", file=sys.stderr)
        for r, res in zip(chunk, describer.describe(images, options)):
            spoken[r["file"]] = res
        bar.update(min(i + BATCH, len(records)))
    return spoken


def score(spoken: dict, references: dict, sources: dict, synonyms) -> dict:
    """Every caption metric on what is said, the decision metrics, and both per source under by_source."""
    from edgecap.evaluation.decision_metrics import decision_metrics, source_group
    from edgecap.evaluation.evaluate import evaluate_captions
    from edgecap.metrics.chair import load_chair_table

    table = load_chair_table(synonyms)

    def on(keys) -> dict:
        metrics = evaluate_captions({k: spoken[k].caption for k in keys}, {k: references[k] for k in keys},
                                    synonyms_path=synonyms)
        metrics.update(decision_metrics({k: spoken[k] for k in keys}, references, table))
        return metrics

    metrics = on(list(spoken))
    groups: dict[str, list[str]] = {}
    for key in spoken:
        groups.setdefault(source_group(sources.get(key)), []).append(key)
    if len(groups) > 1 or "unknown" not in groups:
        metrics["by_source"] = {name: on(keys) for name, keys in sorted(groups.items())}
    return metrics


def run_eval(args) -> int:
    from edgecap.cli_args import decoding_options
    from edgecap.core.model import OnnxCaptioner
    from edgecap.evaluation.decision_metrics import plot_risk_coverage, risk_coverage, source_group
    from edgecap.evaluation.evaluate import metrics_markdown, plot_metrics
    from edgecap.metrics.chair import load_chair_table

    records = read_split(args.data, args.split)
    references = {r["file"]: r["captions"] for r in records}
    sources = {r["file"]: r.get("source") for r in records}
    variants = [parse_variant(v) for v in args.variant] or [
        Variant("model", args.model, not args.no_calibration)]
    synonyms = args.synonyms or _default_synonyms(Path(args.data))
    rows: dict[str, dict] = {}
    all_spoken: dict[str, dict] = {}
    for variant in variants:
        captioner = OnnxCaptioner.load(variant.model, provider=args.provider, threads=args.threads)
        options = decoding_options(args, captioner)
        options = replace(options, calibrate=variant.calibrate, rerank=options.rerank and variant.rerank)
        start = time.time()
        spoken = caption_records(captioner, records, Path(args.data), options, variant.name,
                                 True if args.progress else None)
        seconds = time.time() - start
        metrics = score(spoken, references, sources, synonyms)
        metrics["seconds_per_image"] = round(seconds / max(len(spoken), 1), 4)
        rows[variant.name] = metrics
        all_spoken[variant.name] = spoken
    flat = {name: {k: v for k, v in m.items() if k != "by_source"} for name, m in rows.items()}
    for name, m in rows.items():
        for source, sm in m.get("by_source", {}).items():
            flat[f"{name} / {source}"] = sm
    table = metrics_markdown(flat)
    print(table)
    if args.json:
        payload = rows[variants[0].name] if len(rows) == 1 else rows
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.plot:
        plot_metrics(rows, args.plot)
    if args.risk_coverage:
        chair = load_chair_table(synonyms)
        curves = {}
        for name, spoken in all_spoken.items():
            groups: dict[str, list[str]] = {}
            for key in spoken:
                groups.setdefault(source_group(sources.get(key)), []).append(key)
            for source, keys in sorted(groups.items()):
                m = rows[name].get("by_source", {}).get(source, rows[name])
                label = source if len(all_spoken) == 1 else f"{name} / {source}"
                curves[label] = (risk_coverage({k: spoken[k] for k in keys}, references, chair),
                                 (m["coverage"], m["chair_s_sure"]))
        plot_risk_coverage(curves, args.risk_coverage)
    if args.predictions:
        Path(args.predictions).write_text(json.dumps(
            {name: {k: {"caption": s.caption, "confidence": s.confidence, "named": list(s.named),
                        "model_caption": s.model_caption, "support": round(s.support, 3),
                        "objects": [[d.name, round(d.score, 3)] for d in s.objects], "faces": s.faces}
                    for k, s in spoken.items()} for name, spoken in all_spoken.items()}, indent=1) + "\n")
    return 0


def _default_synonyms(data: Path) -> Path | None:
    for candidate in (data / "chair" / "synonyms.txt", data.parent / "chair" / "synonyms.txt"):
        if candidate.is_file():
            return candidate
    return None


def register_cli(sub) -> None:
    from edgecap.cli_args import add_decoding_args, add_model_args

    p = sub.add_parser("eval", help="score captions against human references (BLEU, CIDEr, CHAIR, ...)")
    p.add_argument("--data", type=Path, required=True, help="folder with captions.jsonl and the images")
    p.add_argument("--split", default=None, help="only records of this split (default: every record)")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=MODEL_DIR[:off][,norerank] (SPARC off; no memory reranking), repeatable")
    p.add_argument("--json", default=None, help="write metrics (stable lower-case keys) to this file")
    p.add_argument("--markdown", default=None, help="write the markdown table to this file")
    p.add_argument("--plot", default=None, help="write a PNG comparing the variants")
    p.add_argument("--predictions", default=None, help="write every caption to this JSON file")
    p.add_argument("--risk-coverage", default=None, metavar="PNG",
                   help="write a risk-coverage PNG (CHAIR_s against the share of photos captioned), per source")
    p.add_argument("--synonyms", default=None, help="CHAIR synonyms file (default: DATA/../chair/synonyms.txt)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not a terminal")
    add_model_args(p)
    add_decoding_args(p)
    p.set_defaults(func=run_eval)
