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


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, total: int, label: str, enabled: bool | None = None):
        self.total, self.label, self.start = total, label, time.time()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.time() - self.start, 1e-6)
        eta = (self.total - done) / rate if rate > 0 else 0
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                         f"{rate:.1f} img/s eta {eta:.0f} s ")
        sys.stderr.flush()
        if done >= self.total:
            sys.stderr.write("\n")


def caption_records(captioner, records: list[dict], root: Path, options, label: str,
                    progress: bool | None = None) -> dict[str, str]:
    from edgecap.image import ImageError, read_image

    predictions: dict[str, str] = {}
    bar = Progress(len(records), label, progress)
    for i in range(0, len(records), BATCH):
        chunk, images = [], []
        for r in records[i:i + BATCH]:
            try:
                images.append(read_image(root / r["file"]))
                chunk.append(r)
            except ImageError as exc:
                print(f"edgecap: warning: {exc}; skipped", file=sys.stderr)
        for r, res in zip(chunk, captioner.caption(images, options)):
            predictions[r["file"]] = res.caption
        bar.update(min(i + BATCH, len(records)))
    return predictions


def run_eval(args) -> int:
    from edgecap.cli import decoding_options
    from edgecap.evaluate import evaluate_captions, metrics_markdown, plot_metrics
    from edgecap.model import Captioner

    records = read_split(args.data, args.split)
    references = {r["file"]: r["captions"] for r in records}
    variants = [parse_variant(v) for v in args.variant] or [
        Variant("model", args.model, not args.no_calibration)]
    synonyms = args.synonyms or _default_synonyms(Path(args.data))
    rows: dict[str, dict] = {}
    all_predictions: dict[str, dict[str, str]] = {}
    for variant in variants:
        captioner = Captioner.load(variant.model, provider=args.provider, threads=args.threads)
        options = decoding_options(args, captioner)
        options = replace(options, calibrate=variant.calibrate, rerank=options.rerank and variant.rerank)
        start = time.time()
        predictions = caption_records(captioner, records, Path(args.data), options, variant.name,
                                      True if args.progress else None)
        seconds = time.time() - start
        metrics = evaluate_captions(predictions, {k: references[k] for k in predictions},
                                    synonyms_path=synonyms)
        metrics["seconds_per_image"] = round(seconds / max(len(predictions), 1), 4)
        rows[variant.name] = metrics
        all_predictions[variant.name] = predictions
    table = metrics_markdown(rows)
    print(table)
    if args.json:
        payload = rows[variants[0].name] if len(rows) == 1 else rows
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.plot:
        plot_metrics(rows, args.plot)
    if args.predictions:
        Path(args.predictions).write_text(json.dumps(all_predictions, indent=1) + "\n")
    return 0


def _default_synonyms(data: Path) -> Path | None:
    for candidate in (data / "chair" / "synonyms.txt", data.parent / "chair" / "synonyms.txt"):
        if candidate.is_file():
            return candidate
    return None


def register_cli(sub) -> None:
    from edgecap.cli import add_decoding_args, add_model_args

    p = sub.add_parser("eval", help="score captions against human references (BLEU, CIDEr, CHAIR, ...)")
    p.add_argument("--data", type=Path, required=True, help="folder with captions.jsonl and the images")
    p.add_argument("--split", default=None, help="only records of this split (default: every record)")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=MODEL_DIR[:off][,norerank] (SPARC off; no memory reranking), repeatable")
    p.add_argument("--json", default=None, help="write metrics (stable lower-case keys) to this file")
    p.add_argument("--markdown", default=None, help="write the markdown table to this file")
    p.add_argument("--plot", default=None, help="write a PNG comparing the variants")
    p.add_argument("--predictions", default=None, help="write every caption to this JSON file")
    p.add_argument("--synonyms", default=None, help="CHAIR synonyms file (default: DATA/../chair/synonyms.txt)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not a terminal")
    add_model_args(p)
    add_decoding_args(p)
    p.set_defaults(func=run_eval)
