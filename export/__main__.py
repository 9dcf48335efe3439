"""`python -m export <command>`: the build-time tools.

Each sub-command is one `register_<name>(subparsers)` function that adds its parser
and sets `func`; to add a command, write such a function and list it in COMMANDS.
Handlers import their heavy modules (torch, transformers) themselves, so `--help` is
instant.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def _fail(message: str, code: int = 2) -> int:
    print(f"python -m export: error: {message}", file=sys.stderr)
    return code


# --- convert ----------------------------------------------------------------------------
def register_convert(subparsers) -> None:
    p = subparsers.add_parser("convert", help="turn a local BLIP / ViT-GPT2 / GIT checkpoint into a bundle",
                              description="Convert a local transformers image-captioning checkpoint into a "
                                          "verified edgecap bundle. Runs offline: pass a directory, not a Hub id.")
    p.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="checkpoint directory (config.json, weights, tokenizer, preprocessor_config.json)")
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
    from export.convert import ConvertError, convert, photo_paths

    try:
        photos = photo_paths(args.photos) if args.photos else None
        out = convert(args.source, args.out, arch=args.arch, int8=args.int8, calibration=args.calibration,
                      name=args.name, photos=photos)
    except ConvertError as exc:
        raise CommandError(str(exc)) from None
    from edgecap.bundle import load_bundle

    bundle = load_bundle(out)
    verification = bundle.manifest.get("verification", {})
    print(f"wrote {bundle.name} ({bundle.architecture.family}, {bundle.manifest['quantization']['decoder']}) to {out}")
    for check, numbers in verification.items():
        print(f"  {check}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in numbers.items()))
    return 0


# --- tiny ------------------------------------------------------------------------------
def register_tiny(subparsers) -> None:
    p = subparsers.add_parser("tiny", help="build the tiny random test bundle (no downloads)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.set_defaults(func=cmd_tiny)


def cmd_tiny(args) -> int:
    from export.tiny import build_tiny_bundle

    _, path = build_tiny_bundle(args.out)
    print(f"wrote the tiny test bundle to {path}")
    return 0


def _model_commands() -> dict:
    from export.commands import REGISTER

    return {r.__name__.removeprefix("register_"): r for r in REGISTER}


COMMANDS = {"convert": register_convert, "tiny": register_tiny, **_model_commands()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description="edgecap build-time tools.")
    parser.add_argument("-v", "--verbose", action="store_true")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS.values():
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="export: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except CommandError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
