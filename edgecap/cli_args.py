"""Arguments and options every sub-command that runs the captioner shares.

The sub-commands import these; `edgecap.cli` sits above them all and nothing imports it back.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help="model bundle folder (default: models/edgecap-base)")
    p.add_argument("--provider", default="auto",
                   help="auto, cpu, cuda, tensorrt, openvino, qnn, coreml or a full onnxruntime provider name")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for onnxruntime")


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detail", choices=["brief", "detailed"], default="brief")
    p.add_argument("--beams", type=int, default=None, help="beam size 1-8")
    p.add_argument("--temperature", type=float, default=None, help="> 0 samples instead of beam search")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--min-length", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-calibration", action="store_true", help="turn SPARC calibration off")
    p.add_argument("--calibration", default=None, help="override SPARC settings, e.g. alpha=1.2,tau=2")
    p.add_argument("--no-rerank", action="store_true",
                   help="say the beam caption as is, without checking candidates against the model's memory")


def decoding_options(args, captioner=None):
    """The options the decoding flags ask for. `captioner`: the loaded model whose calibration
    --calibration overrides; without one (edgecap describe, whose workers load their own) the
    bundle's manifest is read for it."""
    from edgecap.core.decoding import preset

    calibration = None
    if args.calibration:
        if captioner is not None:
            bundle = captioner.bundle
        else:
            from edgecap.core.bundle import load_bundle
            from edgecap.core.model import default_model_dir

            bundle = load_bundle(args.model or default_model_dir(), verify=False)  # the workers verify it
        calibration = bundle.calibration.with_overrides(args.calibration)
    beams = args.beams
    if args.temperature and beams is None:
        beams = 1
    return preset(args.detail, beam_size=beams, temperature=args.temperature, top_p=args.top_p,
                  repetition_penalty=args.repetition_penalty, min_length=args.min_length,
                  max_length=args.max_length, seed=args.seed, calibrate=not args.no_calibration,
                  calibration=calibration, rerank=False if args.no_rerank else None)


def load_captioner(args, perception: bool = False, started=None):
    """perception: also build the bundle's detectors, on a second thread while the captioner loads.
    started: the loading begun by edgecap.core.early.start_loading (else it begins here)."""
    from edgecap.core.early import start_loading
    from edgecap.core.model import OnnxCaptioner

    build = None
    if perception:
        from edgecap.vision.perception import Perceiver

        build = Perceiver.from_bundle
    started = started or start_loading(args.model, provider=args.provider, threads=args.threads)
    return OnnxCaptioner.finish(started, perception=build)
