"""Bring your own checkpoint: a local transformers captioner -> a verified edgecap bundle.

    python -m export convert --from DIR --arch auto|blip|vision-encoder-decoder|git --out OUT
                             [--int8] [--calibration alpha=..,tau=..]

Supported: BLIP (BlipForConditionalGeneration), VisionEncoderDecoderModel with a GPT-2
decoder (ViT-GPT2 and friends) and GIT (GitForCausalLM). Each architecture module
(export/hf_*.py) wraps the loaded model's own submodules in the edgecap graph
contract, with every attention over the image as ai.edgecap::CalibratedAttention;
this module loads the checkpoint offline, exports and verifies the two graphs,
carries over the tokenizer and preprocessing, and optionally quantizes.

Conversion never touches the network: a Hub id is refused with a hint to download
the checkpoint first.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from edgecap.core.bundle import Preprocessing, load_bundle
from edgecap.core.calibration import CalibrationSpec
from edgecap.core.decoding import DecodingOptions
from edgecap.core.image import normalize, read_image, resize_for_model
from edgecap.core.model import OnnxCaptioner
from export.bundle import update_manifest, write_bundle
from export.generate import sparc_generate
from export.hf_blip import BlipCaptioner
from export.hf_common import HFCaptioner, example_pixels
from export.hf_git import GitCaptioner, UnsupportedGitVariant
from export.hf_vision_encoder_decoder import UnsupportedDecoder, VisionEncoderDecoderCaptioner
from export.onnx_export import DecoderGraph, export_graphs
from export.quantize import first_step_logits, quantize_verified, token_agreement

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = REPO / "assets"

# Architecture name (= the checkpoint's config.json model_type) -> wrapper, transformers class.
ARCHITECTURES: dict[str, tuple[type[HFCaptioner], str]] = {
    "blip": (BlipCaptioner, "BlipForConditionalGeneration"),
    "vision-encoder-decoder": (VisionEncoderDecoderCaptioner, "VisionEncoderDecoderModel"),
    "git": (GitCaptioner, "GitForCausalLM"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
# An image processor saved alone, or (transformers 5) inside a whole processor's config.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
VERIFY_STEPS = 20
INT8_MIN_AGREEMENT = 0.9  # greedy token agreement an int8 encoder must keep to ship
MAX_LOGIT_ERROR = 2e-3  # relative to the logits' magnitude; fp32 torch vs onnxruntime


class ConvertError(Exception):
    """A checkpoint that cannot be converted; the message is one line for the user."""


@dataclass
class Checkpoint:
    """A loaded checkpoint, ready to export."""

    path: Path
    arch: str
    captioner: HFCaptioner
    tokenizer_json: str
    preprocessing: Preprocessing
    config: dict[str, Any]


# --- loading ----------------------------------------------------------------------
def checkpoint_dir(source: str | Path) -> Path:
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ConvertError(f"{source} is a file; pass the checkpoint directory (with config.json)")
    if HUB_ID.match(str(source)):
        raise ConvertError(f"{source!r} is not a local directory; conversion is offline, so download the checkpoint "
                           f"first (e.g. `huggingface-cli download {source} --local-dir DIR`) and pass --from DIR")
    raise ConvertError(f"checkpoint directory {source} does not exist")


def read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConvertError(f"{path} has no config.json; it is not a transformers checkpoint")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{config_file} is not valid JSON: {exc}") from None


def resolve_architecture(config: dict[str, Any], requested: str, path: Path) -> str:
    model_type = config.get("model_type", "?")
    supported = ", ".join(ARCHITECTURES)
    if requested != "auto" and requested not in ARCHITECTURES:
        raise ConvertError(f"unsupported architecture {requested!r} (choose auto, {supported})")
    if model_type not in ARCHITECTURES:
        raise ConvertError(f"{path} holds a {model_type!r} model; supported architectures: {supported}")
    if requested not in ("auto", model_type):
        raise ConvertError(f"--arch {requested} does not match {path}, which holds a {model_type!r} model")
    return model_type


def from_local(loader, path: Path, what: str, **kwargs):
    """loader.from_pretrained on local files only; a failure becomes one ConvertError line."""
    try:
        return loader.from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise ConvertError(f"cannot load {what} from {path}: {_first_line(exc)}") from None


def load_model(path: Path, arch: str) -> HFCaptioner:
    wrapper, class_name = ARCHITECTURES[arch]
    model = from_local(getattr(transformers, class_name), path, class_name, attn_implementation="eager",
                       dtype=torch.float32)
    try:
        return wrapper(model)
    except (UnsupportedDecoder, UnsupportedGitVariant) as exc:
        raise ConvertError(f"{path}: {exc}") from None


def load_tokenizer_json(path: Path) -> str:
    """tokenizer.json of the checkpoint's fast tokenizer (what the runtime's `tokenizers` reads)."""
    # AutoTokenizer invents an empty tokenizer from the model type when there are no
    # tokenizer files at all, so look for them first.
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConvertError(f"{path} has no tokenizer; save it with the checkpoint "
                           "(tokenizer.save_pretrained(DIR) or processor.save_pretrained(DIR))")
    tokenizer = from_local(transformers.AutoTokenizer, path, "the tokenizer")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConvertError(f"the tokenizer in {path} has no fast (tokenizers) version to ship")
    return backend.to_str()


def load_preprocessing(path: Path, vision_config) -> Preprocessing:
    """The image processor's resize, rescale and normalisation, in the runtime's terms."""
    if not any((path / name).is_file() for name in PROCESSOR_FILES):
        raise ConvertError(f"{path} has no image processor ({' or '.join(PROCESSOR_FILES)}); save it with the "
                           "checkpoint (processor.save_pretrained(DIR))")
    processor = from_local(transformers.AutoImageProcessor, path, "the image processor")
    model_size = vision_config.image_size
    model_size = tuple(model_size) if isinstance(model_size, (list, tuple)) else (model_size, model_size)
    size = getattr(processor, "size", None) or {}
    crop = getattr(processor, "crop_size", None) or {}
    if getattr(processor, "do_center_crop", False) and _get(crop, "height"):
        resize, image_size = "center_crop", (_get(crop, "height"), _get(crop, "width"))
        if _get(size, "shortest_edge") not in (None, min(image_size)):
            log.warning("%s resizes the short side to %s before cropping %s; the bundle crops directly "
                        "(slightly more of the image is seen)", path, _get(size, "shortest_edge"), image_size)
    elif _get(size, "height"):
        resize, image_size = "squash", (_get(size, "height"), _get(size, "width"))
    else:
        resize, image_size = "center_crop", model_size
        log.warning("%s has no fixed output size; the bundle center-crops to the model's %s", path, model_size)
    if tuple(image_size) != tuple(model_size):
        raise ConvertError(f"the image processor in {path} makes {image_size} images but the vision model takes "
                           f"{model_size}")
    rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else 1.0
    if getattr(processor, "do_normalize", False):
        mean, std = _triple(processor.image_mean), _triple(processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return Preprocessing(image_size=tuple(int(s) for s in image_size), resize=resize, rescale=rescale,
                         mean=mean, std=std)


def load_hf_checkpoint(source: str | Path, arch: str = "auto") -> Checkpoint:
    """Everything a bundle needs from a local checkpoint directory, or ConvertError."""
    path = checkpoint_dir(source)
    config = read_config(path)
    arch = resolve_architecture(config, arch, path)
    tokenizer_json = load_tokenizer_json(path)
    captioner = load_model(path, arch)
    preprocessing = load_preprocessing(path, captioner.vision_config())
    tokens = captioner.token_ids()
    if tokens["eos_id"] is None or None in tokens["prompt_ids"]:
        raise ConvertError(f"{path}: the generation config sets no start or end token ({tokens})")
    return Checkpoint(path, arch, captioner, tokenizer_json, preprocessing, config)


# --- export -----------------------------------------------------------------------
def export_onnx(captioner: HFCaptioner, out_dir: Path) -> dict[str, Path]:
    """encoder.onnx (the captioner's forward is its encode) and decoder.onnx (its step), fp32."""
    pixels = example_pixels(captioner.vision_config(), batch=2)
    with torch.no_grad():
        cross_k, _, _ = captioner.encode(pixels)
    return export_graphs(captioner, DecoderGraph(captioner), pixels, captioner.example_decoder_inputs(cross_k),
                         captioner.n_layers, captioner.max_positions, out_dir)


# --- verification -------------------------------------------------------------------
def photo_paths(folder: Path | None = None) -> list[Path]:
    folder = Path(folder) if folder else DEFAULT_PHOTOS
    paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise ConvertError(f"no photos (*.jpg, *.png) in {folder} to verify the bundle with")
    return paths


def greedy(max_length: int, calibrate: bool) -> DecodingOptions:
    return DecodingOptions(beam_size=1, min_length=0, max_length=max_length, calibrate=calibrate, rerank=False)


def verify_against_torch(bundle_dir: Path, captioner: HFCaptioner, photos: list[np.ndarray]) -> dict[str, Any]:
    """Load the bundle with the edgecap runtime and compare it with the checkpoint in torch.

    Checks the encoder outputs and the first-step logits against the step module, then
    the runtime's greedy captions: SPARC off against transformers' own generate() and
    against export.generate.sparc_generate over the step module, SPARC on against
    sparc_generate with the bundle's calibration.
    """
    runtime = OnnxCaptioner.load(bundle_dir, provider="cpu")
    prep = runtime.bundle.preprocessing
    pixels = torch.from_numpy(np.stack([normalize(resize_for_model(p, prep), prep) for p in photos]))
    features = runtime.encode(photos)
    tokens, rows = runtime.bundle.tokens, len(photos)
    logits = first_step_logits(runtime, features)
    with torch.no_grad():
        cross_k, cross_v, _ = captioner.encode(pixels)
        expected = captioner.step(torch.tensor([list(tokens.prompt_ids)] * rows), captioner.empty_cache(rows),
                                  captioner.empty_cache(rows), cross_k, cross_v,
                                  torch.ones(captioner.n_layers, rows, cross_k.shape[3]))[0]
    logit_error = float(np.abs(logits - expected.numpy()).max())
    report: dict[str, Any] = {
        "photos": len(photos),
        "encoder_max_abs_error": float(np.abs(features.cross_k - cross_k.numpy()).max()),
        "max_abs_logit_error": logit_error,
    }
    if logit_error > MAX_LOGIT_ERROR * max(1.0, float(np.abs(expected.numpy()).max())):
        raise ConvertError(f"the exported decoder disagrees with the torch model (max logit error {logit_error:.3g})")
    steps = min(VERIFY_STEPS, captioner.max_positions - len(tokens.prompt_ids))
    captions = {calibrate: [r.tokens for r in runtime.caption_features(features, greedy(steps, calibrate))]
                for calibrate in (False, True)}
    references = {"transformers_generate": (False, captioner.hf_generate(pixels, steps))}
    for name, calibrate in (("sparc_off", False), ("sparc_on", True)):
        spec = runtime.bundle.calibration if calibrate else None
        references[name] = (calibrate, sparc_generate(captioner.step, cross_k, cross_v, captioner.empty_cache(rows),
                                                      prompt_ids=tokens.prompt_ids, eos_id=tokens.eos_id,
                                                      max_new_tokens=steps, calibration=spec))
    for name, (calibrate, reference) in references.items():
        report[f"greedy_token_agreement_{name}"] = token_agreement(reference, captions[calibrate])
        if reference != captions[calibrate]:
            log.warning("greedy captions differ from %s: %s vs %s", name, reference, captions[calibrate])
    return report


# --- the whole conversion --------------------------------------------------------------
def export_fp32_bundle(checkpoint: Checkpoint, out_dir: Path, *, name: str | None = None,
                       calibration: CalibrationSpec | None = None, photos: list[Path] | None = None) -> Path:
    captioner = checkpoint.captioner
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_onnx(captioner, Path(tmp))
        write_bundle(out_dir, graphs["encoder"], graphs["decoder"], checkpoint.tokenizer_json,
                     name=name or checkpoint.path.name, family=captioner.family,
                     max_length=captioner.max_positions, preprocessing=checkpoint.preprocessing,
                     tokens={**captioner.token_ids(), "suppress_ids": []},
                     calibration=calibration or CalibrationSpec(), provenance=provenance(checkpoint),
                     quantization={"encoder": "fp32", "decoder": "fp32"})
    images = [read_image(p) for p in (photos or photo_paths())]
    update_manifest(out_dir, verification={"fp32_vs_torch": verify_against_torch(out_dir, captioner, images)})
    return out_dir


def quantize_converted(fp32_dir: Path, out_dir: Path, photos: list[Path] | None = None) -> Path:
    """int8 copy of a converted fp32 bundle (export.quantize.quantize_verified).

    Both graphs are quantized dynamically with per-tensor int8 weights: static QDQ
    clips the outlier activations of vision transformers (see export/quantize.py), and
    onnxruntime 1.32's per-channel dynamic MatMulInteger lost most greedy tokens on the
    converted test checkpoints (agreement 0.62 against 1.0 per-tensor). Where the int8
    encoder still loses more than INT8_MIN_AGREEMENT of the tokens, the encoder stays
    fp32 (the decoder, run once per token, is where int8 pays most) and the manifest
    records both measurements.
    """
    paths = photos or photo_paths()
    quantize_verified(fp32_dir, out_dir, paths, paths, encoders=("dynamic", "fp32"),
                      min_agreement=INT8_MIN_AGREEMENT, name_suffix="-int8")
    return out_dir


def convert(source: str | Path, out_dir: str | Path, *, arch: str = "auto", int8: bool = False,
            calibration: str | None = None, name: str | None = None, photos: list[Path] | None = None) -> Path:
    """Convert a local checkpoint directory into a verified bundle at out_dir."""
    spec = CalibrationSpec()
    if calibration:
        try:
            spec = spec.with_overrides(calibration)
        except ValueError as exc:
            raise ConvertError(f"--calibration: {exc}") from None
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    checkpoint = load_hf_checkpoint(source, arch)
    with tempfile.TemporaryDirectory() as tmp:  # out_dir only ever receives a verified bundle
        bundle = export_fp32_bundle(checkpoint, Path(tmp) / "fp32", name=name, calibration=spec, photos=photos)
        if int8:
            bundle = quantize_converted(bundle, Path(tmp) / "int8", photos)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(bundle, out_dir)
    load_bundle(out_dir)
    return out_dir


def check_out_dir(out_dir: Path) -> None:
    """out_dir may be new, empty or an earlier bundle (replaced); anything else is kept."""
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir())
                             and not (out_dir / "manifest.json").is_file()):
        raise ConvertError(f"{out_dir} exists and is not an edgecap bundle; pass a new folder to --out")


def provenance(checkpoint: Checkpoint) -> dict[str, Any]:
    config = checkpoint.config
    return {"source": "converted from a transformers checkpoint with `python -m export convert`",
            "checkpoint": checkpoint.path.name, "architectures": config.get("architectures"),
            "model_type": config.get("model_type"), "checkpoint_transformers": config.get("transformers_version"),
            "converted_with": f"transformers {transformers.__version__}, torch {torch.__version__}"}


def _get(size, key):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _triple(values) -> tuple[float, float, float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values] * 3)]
    return (values[0], values[1], values[2])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
