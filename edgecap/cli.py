"""The `edgecap` command: caption photos, benchmark, inspect a model (narrate and eval plug in here)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from edgecap import __version__
from edgecap.cli_args import add_decoding_args, add_model_args, decoding_options, load_captioner

log = logging.getLogger("edgecap")
BATCH = 8


def _fail(message: str, code: int = 2) -> int:
    print(f"edgecap: error: {message}", file=sys.stderr)
    return code


def cmd_caption(args) -> int:
    from edgecap.core.early import start_loading

    started = start_loading(args.model, args.provider, args.threads)  # the decoder builds while the rest imports
    from edgecap.photos import SpeechSetupError, Voice, caption_files

    try:
        voice = Voice(args)  # before the model loads: asked to speak where nothing is heard, say so now
    except SpeechSetupError as exc:
        started.abandon()
        return _fail(str(exc))
    captioner = load_captioner(args, perception=True, started=started)
    return caption_files(args, captioner, decoding_options(args, captioner), voice)


def cmd_info(args) -> int:
    import onnxruntime as ort

    captioner = load_captioner(args)
    b = captioner.bundle
    print(json.dumps({"name": b.name, "path": str(b.path), "manifest_sha256": b.digest,
                      "shipped": b.shipped,  # True: the digest matches the one this edgecap pins
                      "architecture": b.manifest["architecture"],
                      "calibration": b.calibration.to_dict(), "quantization": b.manifest.get("quantization"),
                      "memory": b.manifest.get("memory"), "provider": captioner.provider,
                      "available_providers": ort.get_available_providers()},
                     indent=2))
    return 0


def cmd_bench(args) -> int:
    from edgecap.core.early import start_loading

    started = start_loading(args.model, args.provider, args.threads)
    from edgecap.evaluation.bench import run_bench

    return run_bench(args, load_captioner(args, perception=True, started=started))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgecap", description="Offline image captioning that speaks.")
    parser.add_argument("--version", action="version", version=f"edgecap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("caption", help="describe photos")
    p.add_argument("paths", nargs="+")
    p.add_argument("--json", action="store_true",
                   help="print JSON: path, caption (as said), confidence, objects, faces, ms, status (message for errors)")
    p.add_argument("--speak", action="store_true", help="also say each caption aloud")
    p.add_argument("--speak-to", metavar="FILE.wav", help="write what would be said to a WAV file")
    p.add_argument("--speech", choices=["auto", "pyttsx3", "espeak", "none"], default="auto",
                   help="speech engine")
    p.add_argument("--read-text", action="store_true", help="add legible text to the caption (\"It says: STOP.\")")
    add_model_args(p)
    add_decoding_args(p)
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("bench", help="time each stage of captioning, against its floor (and other runtimes)")
    p.add_argument("paths", nargs="*", help="photos (default: the bundled example photos)")
    p.add_argument("--images", type=Path, default=None, help="a folder of photos to time")
    p.add_argument("--limit", type=int, default=20, help="at most this many photos")
    p.add_argument("--runs", type=int, default=3, help="passes over the photos")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compare", action="store_true",
                   help="also PyTorch eager, plain onnxruntime and optimum (needs edgecap[export]); "
                        "writes docs/performance.md")
    p.add_argument("--compare-photos", type=int, default=8, help="photos for --compare")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the JSON report to FILE (no FILE: print it)")
    add_model_args(p)
    add_decoding_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help="show the model bundle and providers")
    add_model_args(p)
    p.set_defaults(func=cmd_info)

    for command in _subcommands():
        command.register_cli(sub)
    return parser


def _subcommands():
    """Sub-commands in their own modules. Imported here, when the parser is built, so `import
    edgecap.cli` stays light; each loads its heavy parts (Qt, the model, Ray) only when it runs."""
    from edgecap import app, doctor
    from edgecap.evaluation import dataset_eval
    from edgecap.library import describe_cli
    from edgecap.narration import narrate_cli
    from edgecap.vision import read_aloud

    return (narrate_cli, dataset_eval, doctor, read_aloud, describe_cli, app)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="edgecap: %(levelname)s: %(message)s")
    from edgecap.audio.voices import SpeechError
    from edgecap.core.bundle import BundleError
    from edgecap.core.providers import ProviderError

    try:
        return args.func(args)
    except (BundleError, ProviderError, SpeechError, ValueError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
