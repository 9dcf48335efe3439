"""`python -m export <command>`: the build-time tools, in one parser.

Each sub-command is one `register_<name>(subparsers)` function that adds its parser and
sets `func`; to add a command, write such a function and list it in COMMANDS. Handlers
import their heavy modules (torch, transformers) themselves, so `--help` is instant.

Errors: a handler raises CommandError (or lets a BundleError, ImageError or missing
file through); `main` prints it as one line, `python -m export <command>: error:
<message naming the file>`, and returns 2, as argparse does for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from edgecap.core.bundle import BundleError
from edgecap.core.image import ImageError

EXIT_ERROR = 2


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def _require_file(path: Path, what: str) -> None:
    if not Path(path).is_file():
        raise CommandError(f"{what} {path} not found")


def _require_data(data: Path) -> None:
    _require_file(Path(data) / "captioned" / "captions.jsonl", "captioned data")


def _common(p, needs_recipe: bool = True) -> None:
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    p.add_argument("--cache", type=Path, default=Path("cache"), help="feature cache folder")
    if needs_recipe:
        p.add_argument("--recipe", default="student")
        p.add_argument("--minutes", type=float, default=None, help="override the recipe's wall-clock budget")
        p.add_argument("--epochs", type=int, default=None)


# --- convert ----------------------------------------------------------------------------
def register_convert(sub) -> None:
    p = sub.add_parser("convert", help="turn a local BLIP / ViT-GPT2 / GIT checkpoint into a bundle",
                       description="Convert a local transformers image-captioning checkpoint into a "
                                   "verified edgecap bundle. Runs offline: pass a directory, not a Hub id.")
    p.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="checkpoint directory (config.json, weights, tokenizer, and the image processor's "
                        "preprocessor_config.json or processor_config.json)")
    p.add_argument("--arch", default="auto", metavar="ARCH",
                   help="auto (from config.json), blip, vision-encoder-decoder or git")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="bundle folder to write")
    p.add_argument("--int8", action="store_true",
                   help="write an int8 bundle (per-tensor int8 weights, activations quantized per call)")
    p.add_argument("--calibration", default=None, metavar="SETTINGS",
                   help="SPARC defaults for the bundle, e.g. alpha=1.2,tau=2 (alpha, beta, tau, selection_layer, "
                        "gain_layers)")
    p.add_argument("--name", default=None, help="bundle name (default: the checkpoint folder's name)")
    p.add_argument("--photos", type=Path, default=None, metavar="DIR",
                   help="photos to verify the bundle on (default: assets/)")
    p.set_defaults(func=cmd_convert)


class _DropMessages(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def _drop_messages(logger_name: str | None, start: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropMessages) and f.start == start for f in logger.filters):
        logger.addFilter(_DropMessages(start))


def _quiet_convert_noise() -> None:
    """Progress bars and library chatter that say nothing about this conversion (-v keeps them)."""
    import warnings

    import transformers

    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # "no torchvision"
    # onnxruntime's advice for static quantization, logged for the dynamic kind too
    _drop_messages(None, "Please consider to run pre-processing before quantization")
    # generate() on a decoder whose pad token is its EOS (GPT-2), in the verification
    _drop_messages("transformers.generation.utils", "The attention mask is not set")
    warnings.filterwarnings("ignore", message=r"# The axis name: \w+ will not be used")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)


def cmd_convert(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load is local_files_only anyway
    if not args.verbose:
        _quiet_convert_noise()
    from edgecap.core.bundle import load_bundle
    from export.convert import ConvertError, convert, photo_paths

    try:
        photos = photo_paths(args.photos) if args.photos else None
        out = convert(args.source, args.out, arch=args.arch, int8=args.int8, calibration=args.calibration,
                      name=args.name, photos=photos)
    except ConvertError as exc:
        raise CommandError(str(exc)) from None
    bundle = load_bundle(out)
    print(f"wrote {bundle.name} ({bundle.architecture.family}, {bundle.manifest['quantization']['decoder']}) to {out}")
    for check, numbers in bundle.manifest.get("verification", {}).items():
        print(f"  {check}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in numbers.items()))
    return 0


# --- the edgecap recipe: train, distill, finetune, sweep, bundle -----------------------
def _recipe(args):
    from dataclasses import replace

    from export.train import RECIPES

    if args.recipe not in RECIPES:
        raise CommandError(f"unknown recipe {args.recipe!r} (choose from {', '.join(RECIPES)})")
    overrides = {k: getattr(args, k) for k in ("minutes", "epochs") if getattr(args, k) is not None}
    return replace(RECIPES[args.recipe], **overrides)


def cmd_train(args) -> int:
    from export.train import train

    recipe = _recipe(args)
    _require_data(args.data)
    train(recipe, args.out, args.data, args.cache)
    return 0


def cmd_distill(args) -> int:
    from export.pipeline import chosen_spec
    from export.train import train

    recipe = _recipe(args)
    _require_data(args.data)
    _require_file(args.teacher, "teacher checkpoint")
    calibration = chosen_spec(args.calibration_report) if args.calibration_report else None
    train(recipe, args.out, args.data, args.cache, teacher_path=args.teacher,
          teacher_calibration=calibration)
    return 0


def cmd_finetune(args) -> int:
    from export.scst import FinetuneOptions, finetune

    _require_data(args.data)
    _require_file(args.checkpoint, "checkpoint")
    options = FinetuneOptions(minutes=args.minutes, lr=args.lr, xe_weight=args.xe_weight,
                              hallucination_penalty=args.hallucination_penalty)
    finetune(args.checkpoint, args.out, options, args.data, args.cache)
    return 0


def cmd_sweep(args) -> int:
    from export.sweep import markdown, sweep

    _require_data(args.data)
    source = args.model or args.checkpoint
    if args.model is None:
        _require_file(args.checkpoint, "checkpoint")
    report = sweep(source, args.out, args.images, args.data, args.cache, decoding=args.decoding,
                   threads=args.threads)
    print(markdown(report))
    print("chosen:", json.dumps(report["chosen"]))
    return 0


def cmd_bundle(args) -> int:
    from export.pipeline import bundle_checkpoint

    _require_file(args.checkpoint, "checkpoint")
    if args.calibration:  # checked before minutes of export, not after
        from edgecap.core.calibration import CalibrationSpec

        try:
            CalibrationSpec().with_overrides(args.calibration)
        except ValueError as exc:
            raise CommandError(f"--calibration: {exc}") from None
    out = bundle_checkpoint(args.checkpoint, args.out, args.data, name=args.name, int8=args.int8,
                            calibration_report=args.calibration_report, calibration=args.calibration,
                            keep_fp32=args.keep_fp32)
    from edgecap.core.bundle import load_bundle

    bundle = load_bundle(out)
    if "int8_vs_fp32" in bundle.manifest.get("verification", {}):
        print("int8 vs fp32:", json.dumps(bundle.manifest["verification"]["int8_vs_fp32"]))
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    print(f"wrote {out}: {sum(sizes.values()) / 1e6:.1f} MB", json.dumps(sizes))
    return 0


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
    p = sub.add_parser("sweep", help="tune SPARC alpha/beta/tau/selection layer on val, through the shipped "
                                     "decode loop")
    _common(p, needs_recipe=False)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="torch checkpoint (.pt)")
    source.add_argument("--model", type=Path, help="bundle folder: captions by the edgecap runtime itself")
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--decoding", choices=("brief", "greedy"), default="brief",
                   help="brief: the shipped preset (beam 3; a bundle's memory reranks); greedy: 20 words at most")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (--model)")
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


# --- members added to a bundle, and bundle upkeep ----------------------------------------
def _member_parser(sub, name: str, help: str):
    p = sub.add_parser(name, help=help)
    _common(p, needs_recipe=False)
    p.add_argument("--model", type=Path, required=True, help="bundle folder to extend")
    return p


def cmd_memory(args) -> int:
    from edgecap.core.memory import MemorySettings
    from export.data import load_records
    from export.memory import add_memory

    _require_data(args.data)
    photos = [r.path for r in load_records(args.data, split="train")]
    add_memory(args.model, photos, args.dims, MemorySettings(neighbours=args.neighbours, samples=args.samples))
    return 0


def register_memory(sub) -> None:
    from edgecap.core.memory import MemorySettings

    d = MemorySettings()
    p = _member_parser(sub, "memory", "add a caption memory (reranking by similar train photos) to a bundle")
    p.add_argument("--dims", type=int, default=128, help="PCA dimensions of the stored features")
    p.add_argument("--neighbours", type=int, default=d.neighbours)
    p.add_argument("--samples", type=int, default=d.samples, help="sampled candidates per photo at run time")
    p.set_defaults(func=cmd_memory)


def cmd_perception(args) -> int:
    from export.data import calibration_images
    from export.perception import PerceptionOptions, add_perception

    options = PerceptionOptions(detector_size=args.detector_size, detector_int8=args.int8,
                                face_long_side=args.face_size)
    added = add_perception(args.model, args.models or Path(args.data).parent / "models", args.data, options,
                           calibration_images(args.data) if args.int8 else None)
    sizes = {p.name: p.stat().st_size for p in Path(args.model).iterdir() if p.is_file()}
    print(f"added perception to {args.model} (detector {added['detector']['input_size']} px, "
          f"{added['detector']['quantization']}): bundle {sum(sizes.values()) / 1e6:.1f} MB")
    return 0


def register_perception(sub) -> None:
    from export.perception import PerceptionOptions

    d = PerceptionOptions()
    p = _member_parser(sub, "perception", "add object, face and ImageNet perception to a bundle")
    p.add_argument("--models", type=Path, default=None, help="detector folder (default: models/ next to --data)")
    p.add_argument("--detector-size", type=int, default=d.detector_size, help="detector input side in pixels")
    p.add_argument("--face-size", type=int, default=d.face_long_side, help="longer side of the face detector's input")
    p.add_argument("--int8", action="store_true", help="quantize the detector to int8 (static, on unlabelled photos)")
    p.set_defaults(func=cmd_perception)


def cmd_refresh(args) -> int:
    from export.bundle import refresh_bundle

    print(f"{args.bundle}: manifest sha256 {refresh_bundle(args.bundle, args.pin)}")
    return 0


def register_refresh(sub) -> None:
    p = sub.add_parser("refresh", help="re-hash a bundle's files, rewrite manifest.json and bundle.sha256, "
                                       "and pin the digest of a shipped bundle")
    p.add_argument("bundle", type=Path)
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None,
                   help="pin the digest in edgecap/core/shipped_bundles.json (default: for folders in models/)")
    p.set_defaults(func=cmd_refresh)


def cmd_optimize(args) -> int:
    from export.bundle import optimize_bundle

    print(json.dumps(optimize_bundle(args.bundle)))
    return 0


def register_optimize(sub) -> None:
    p = sub.add_parser("optimize", help="per-layer decoder cache, int8 output head, stored memory statistics "
                                        "(in place)")
    p.add_argument("bundle", type=Path, help="bundle folder, rewritten in place")
    p.set_defaults(func=cmd_optimize)


def cmd_tiny(args) -> int:
    from export.tiny import build_tiny_bundle

    _, path = build_tiny_bundle(args.out)
    print(f"wrote the tiny test bundle to {path}")
    return 0


def register_tiny(sub) -> None:
    p = sub.add_parser("tiny", help="build the tiny random test bundle (no downloads)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.set_defaults(func=cmd_tiny)


COMMANDS = [register_convert, register_train, register_distill, register_finetune, register_sweep,
            register_bundle, register_memory, register_perception, register_refresh, register_optimize,
            register_tiny]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description="edgecap build-time tools.")
    parser.add_argument("-v", "--verbose", action="store_true")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "data", False) is None:
        from export.data import DEFAULT_DATA  # torch comes with it: only for the commands that read data

        args.data = DEFAULT_DATA
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="export: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except (CommandError, BundleError, ImageError) as exc:
        message = str(exc)
    except FileNotFoundError as exc:
        message = f"{exc.filename}: not found" if exc.filename else str(exc)
    except KeyboardInterrupt:
        return 130
    print(f"python -m export {args.command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR
