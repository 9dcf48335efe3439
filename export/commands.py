"""`python -m export` sub-commands for the model recipes: train, distill, finetune, sweep, bundle, memory."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from export.data import DEFAULT_DATA

log = logging.getLogger(__name__)


def _recipe(args):
    from export.train import RECIPES

    if args.recipe not in RECIPES:
        raise SystemExit(f"export: error: unknown recipe {args.recipe!r} (choose from {', '.join(RECIPES)})")
    recipe = RECIPES[args.recipe]
    if args.minutes is not None:
        recipe = replace(recipe, minutes=args.minutes)
    if args.epochs is not None:
        recipe = replace(recipe, epochs=args.epochs)
    return recipe


def _check_data(data: Path) -> None:
    if not (Path(data) / "captioned" / "captions.jsonl").is_file():
        raise SystemExit(f"export: error: no captioned data at {data} (expected captioned/captions.jsonl)")


def cmd_train(args) -> int:
    from export.train import train

    _check_data(args.data)
    train(_recipe(args), args.out, args.data, args.cache)
    return 0


def cmd_distill(args) -> int:
    from export.train import train

    _check_data(args.data)
    if not Path(args.teacher).is_file():
        raise SystemExit(f"export: error: teacher checkpoint {args.teacher} not found")
    calibration = None
    if args.calibration_report:
        from export.sweep import chosen_spec

        calibration = chosen_spec(args.calibration_report)
    train(_recipe(args), args.out, args.data, args.cache, teacher_path=args.teacher,
          teacher_calibration=calibration)
    return 0


def cmd_finetune(args) -> int:
    from export.scst import FinetuneOptions, finetune

    _check_data(args.data)
    if not Path(args.checkpoint).is_file():
        raise SystemExit(f"export: error: checkpoint {args.checkpoint} not found")
    options = FinetuneOptions(minutes=args.minutes, lr=args.lr, xe_weight=args.xe_weight,
                              hallucination_penalty=args.hallucination_penalty)
    finetune(args.checkpoint, args.out, options, args.data, args.cache)
    return 0


def cmd_sweep(args) -> int:
    from export.sweep import markdown, sweep

    _check_data(args.data)
    report = sweep(args.checkpoint, args.out, args.images, args.data, args.cache)
    print(markdown(report))
    print("chosen:", json.dumps(report["chosen"]))
    return 0


def calibration_images(data: Path, count: int = 96) -> list[Path]:
    """Real photos for static quantization: unlabelled ones first (never the val split)."""
    unlabeled = sorted((Path(data) / "unlabeled" / "images").glob("*.jpg"))
    if unlabeled:
        step = max(1, len(unlabeled) // count)
        return unlabeled[::step][:count]
    return sorted((Path(__file__).resolve().parent.parent / "assets").glob("*.jpg"))


def parity_images(data: Path, count: int = 64) -> list[Path]:
    from export.data import load_records

    try:
        return [r.path for r in load_records(data, split="val")[:count]]
    except FileNotFoundError:
        return sorted((Path(__file__).resolve().parent.parent / "assets").glob("*.jpg"))


def cmd_bundle(args) -> int:
    from edgecap.bundle import load_bundle, write_manifest
    from edgecap.calibration import CalibrationSpec
    from edgecap.decoding import DecodingOptions
    from edgecap.image import read_image
    from edgecap.model import OnnxCaptioner as Captioner  # the run-time one; export.model.Captioner is torch
    from export.pipeline import export_bundle, load_checkpoint
    from export.quantize import parity_report, quantize_bundle
    from export.sweep import chosen_spec

    model, tokenizer_json, calibration, provenance = load_checkpoint(args.checkpoint)
    if args.calibration_report:
        calibration = chosen_spec(args.calibration_report)
        provenance["calibration_sweep"] = json.loads(Path(args.calibration_report).read_text())["chosen"]
    if args.calibration:
        calibration = (calibration or CalibrationSpec()).with_overrides(args.calibration)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir = out if not args.int8 else Path(tmp) / "fp32"
        if fp32_dir.exists() and fp32_dir == out:
            shutil.rmtree(out)
        export_bundle(model, tokenizer_json, fp32_dir, name=args.name, calibration=calibration,
                      provenance=provenance)
        if args.int8:
            if out.exists():
                for child in out.iterdir():  # keep a hand-written MODEL_CARD.md
                    if child.suffix != ".md":
                        child.unlink() if child.is_file() else shutil.rmtree(child)
            quantize_bundle(fp32_dir, out, calibration_images(args.data), name_suffix="")
            photos = [read_image(p) for p in parity_images(args.data)]
            greedy = DecodingOptions(beam_size=1, min_length=0, max_length=20, rerank=False)
            report = parity_report(Captioner.load(fp32_dir, provider="cpu"), Captioner.load(out, provider="cpu"),
                                   photos, greedy)
            if args.keep_fp32:
                shutil.copytree(fp32_dir, args.keep_fp32, dirs_exist_ok=True)
            bundle = load_bundle(out)
            manifest = dict(bundle.manifest)  # write_manifest recomputes format fields and hashes
            manifest["quantization"]["parity_vs_fp32"] = {k: round(v, 4) for k, v in report.items()}
            write_manifest(out, manifest)
            print("int8 vs fp32 on", report["images"], "val photos:", json.dumps(manifest["quantization"]
                                                                                  ["parity_vs_fp32"]))
    load_bundle(out)
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    print(f"wrote {out}: {sum(sizes.values()) / 1e6:.1f} MB", json.dumps(sizes))
    return 0


def cmd_memory(args) -> int:
    from edgecap.memory import MemorySettings
    from export.data import load_records
    from export.memory import add_memory

    _check_data(args.data)
    photos = [r.path for r in load_records(args.data, split="train")]
    add_memory(args.model, photos, args.dims, MemorySettings(neighbours=args.neighbours, samples=args.samples))
    return 0


def _common(p, needs_recipe: bool = True) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default ../shared/data)")
    p.add_argument("--cache", type=Path, default=Path("cache"), help="feature cache folder")
    if needs_recipe:
        p.add_argument("--recipe", default="student")
        p.add_argument("--minutes", type=float, default=None, help="override the recipe's wall-clock budget")
        p.add_argument("--epochs", type=int, default=None)


def register_train(sub) -> None:
    p = sub.add_parser("train", help="train a captioner on the captioned train split")
    _common(p)
    p.add_argument("--out", type=Path, required=True, help="checkpoint file (.pt)")
    p.set_defaults(func=cmd_train, recipe="teacher")


def register_distill(sub) -> None:
    p = sub.add_parser("distill", help="distil a calibrated teacher into a small student")
    _common(p)
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--calibration-report", type=Path, default=None,
                   help="the teacher's sweep JSON: its chosen SPARC setting decodes the teacher's captions")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_distill)


def register_finetune(sub) -> None:
    from export.scst import FinetuneOptions

    d = FinetuneOptions()
    p = sub.add_parser("finetune", help="self-critical fine-tuning: CIDEr-D reward minus hallucinated objects")
    _common(p, needs_recipe=False)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock budget")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--xe-weight", type=float, default=d.xe_weight,
                   help="weight of cross-entropy on human captions, which holds the vocabulary")
    p.add_argument("--hallucination-penalty", type=float, default=d.hallucination_penalty,
                   help="reward lost per named COCO object that no reference names")
    p.set_defaults(func=cmd_finetune)


def register_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="tune SPARC alpha/beta/tau/selection layer on val")
    _common(p, needs_recipe=False)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--out", type=Path, required=True, help="JSON report")
    p.set_defaults(func=cmd_sweep)


def register_bundle(sub) -> None:
    p = sub.add_parser("bundle", help="export a checkpoint to an edgecap bundle (optionally int8)")
    _common(p, needs_recipe=False)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="edgecap-base")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--keep-fp32", type=Path, default=None, help="also keep the fp32 bundle here")
    p.add_argument("--calibration-report", type=Path, default=None, help="sweep JSON whose chosen setting to ship")
    p.add_argument("--calibration", default=None, help="overrides, e.g. alpha=1.2,tau=2")
    p.set_defaults(func=cmd_bundle)


def register_memory(sub) -> None:
    from edgecap.memory import MemorySettings

    d = MemorySettings()
    p = sub.add_parser("memory", help="add a caption memory (reranking by similar train photos) to a bundle")
    _common(p, needs_recipe=False)
    p.add_argument("--model", type=Path, required=True, help="bundle folder to extend")
    p.add_argument("--dims", type=int, default=128, help="PCA dimensions of the stored features")
    p.add_argument("--neighbours", type=int, default=d.neighbours)
    p.add_argument("--samples", type=int, default=d.samples, help="sampled candidates per photo at run time")
    p.set_defaults(func=cmd_memory)


REGISTER = [register_train, register_distill, register_finetune, register_sweep, register_bundle, register_memory]


def cmd_perception(args) -> int:
    from edgecap.bundle import BundleError
    from export.perception import PerceptionOptions, add_perception

    options = PerceptionOptions(detector_size=args.detector_size, detector_int8=args.int8,
                                face_long_side=args.face_size)
    try:
        added = add_perception(args.model, args.models or Path(args.data).parent / "models", args.data, options,
                               calibration_images(args.data) if args.int8 else None)
    except BundleError as exc:
        raise SystemExit(f"export: error: {exc}") from None
    sizes = {p.name: p.stat().st_size for p in Path(args.model).iterdir() if p.is_file()}
    print(f"added perception to {args.model} (detector {added['detector']['input_size']} px, "
          f"{added['detector']['quantization']}): bundle {sum(sizes.values()) / 1e6:.1f} MB")
    return 0


def register_perception(sub) -> None:
    from export.perception import PerceptionOptions

    d = PerceptionOptions()
    p = sub.add_parser("perception", help="add object, face and ImageNet perception to a bundle")
    _common(p, needs_recipe=False)
    p.add_argument("--model", type=Path, required=True, help="bundle folder to extend")
    p.add_argument("--models", type=Path, default=None, help="detector folder (default: models/ next to --data)")
    p.add_argument("--detector-size", type=int, default=d.detector_size, help="detector input side in pixels")
    p.add_argument("--face-size", type=int, default=d.face_long_side, help="longer side of the face detector's input")
    p.add_argument("--int8", action="store_true", help="quantize the detector to int8 (static, on unlabelled photos)")
    p.set_defaults(func=cmd_perception)


REGISTER.append(register_perception)
