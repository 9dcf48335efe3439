"""int8 quantization of a bundle: dynamic for the decoder, static QDQ or dynamic for the encoder.

Static QDQ (activations quantized with ranges calibrated on photos) suits the
EfficientNet grid encoder. Vision transformers (the encoders of converted BLIP, GIT
and ViT-GPT2 checkpoints) have post-LayerNorm and softmax activations with outliers
that fixed uint8 ranges clip, so for them the encoder is quantized dynamically
(int8 weights, activation ranges per call), as onnxruntime recommends for
transformer models; Conv (the patch embedding) stays fp32 there.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

import onnx
from edgecap.core.bundle import load_bundle
from edgecap.core.decoding import DecodingOptions
from edgecap.core.image import normalize, read_image, resize_for_model
from export.bundle import finish_bundle, update_manifest
from export.onnx_export import IR_VERSION, attach_calibrated_attention
from export.optimize import optimize_decoder

log = logging.getLogger(__name__)


class ImageReader(CalibrationDataReader):
    """Feeds real photos, preprocessed exactly as the runtime does, to the calibrator."""

    def __init__(self, paths: list[Path], preprocessing, batch: int = 8):
        self.paths, self.prep, self.batch = list(paths), preprocessing, batch
        self._it: Iterator | None = None

    def _batches(self):
        for i in range(0, len(self.paths), self.batch):
            pixels = [normalize(resize_for_model(read_image(p), self.prep), self.prep)
                      for p in self.paths[i:i + self.batch]]
            yield {"pixels": np.stack(pixels)}

    def get_next(self):
        if self._it is None:
            self._it = self._batches()
        return next(self._it, None)

    def rewind(self):
        self._it = None


def _fix_ir(path: Path) -> None:
    model = onnx.load(str(path))
    model = attach_calibrated_attention(model)
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.save_model(model, str(path))


def quantize_decoder(src: Path, dst: Path, per_channel: bool = False) -> None:
    """int8 dynamic quantization, then the int8 output head and per-layer cache of export/optimize.py."""
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=["MatMul", "Gemm", "Gather"])
    _fix_ir(dst)
    optimize_decoder(dst, dst)


def quantize_encoder_dynamic(src: Path, dst: Path, per_channel: bool = True) -> None:
    """int8 weights for the encoder's MatMul/Gemm, activations quantized per call (transformer encoders)."""
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=["MatMul", "Gemm"])
    _fix_ir(dst)


def quantize_encoder(src: Path, dst: Path, calibration_images: list[Path], preprocessing) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "encoder_prep.onnx"
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(dst), ImageReader(calibration_images, preprocessing),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    _fix_ir(dst)


ENCODER_MODES = ("static", "dynamic", "fp32")


def quantize_bundle(src_dir: Path, dst_dir: Path, calibration_images: list[Path], *, encoder: bool | str = True,
                    name_suffix: str = "-int8", per_channel: bool = False) -> Path:
    """Write an int8 copy of a verified fp32 bundle.

    encoder: "static" (or True) for static QDQ calibrated on calibration_images,
    "dynamic" for transformer encoders, "fp32" (or False) to leave it as it is.
    per_channel: per-output-channel weight scales for the dynamically quantized graphs.
    """
    mode = _encoder_mode(encoder)
    src = _copy_with_int8_decoder(src_dir, dst_dir, per_channel)
    return _finish_with_encoder(src, Path(dst_dir), calibration_images, mode, name_suffix, per_channel)


def _encoder_mode(encoder: bool | str) -> str:
    mode = {True: "static", False: "fp32"}.get(encoder, encoder)
    if mode not in ENCODER_MODES:
        raise ValueError(f"encoder quantization must be one of {', '.join(ENCODER_MODES)}, got {encoder!r}")
    return mode


def _copy_with_int8_decoder(src_dir: Path, dst_dir: Path, per_channel: bool):
    src = load_bundle(src_dir)
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for rel in src.manifest["sha256"]:
        (dst_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.path / rel, dst_dir / rel)
    quantize_decoder(src.path / src.files["decoder"], dst_dir / src.files["decoder"], per_channel)
    return src


def _finish_with_encoder(src, dst_dir: Path, calibration_images: list[Path], mode: str, name_suffix: str,
                         per_channel: bool) -> Path:
    """The encoder of dst_dir quantized as `mode` (from the fp32 one in src), then the manifest."""
    encoder_src, encoder_dst = src.path / src.files["encoder"], dst_dir / src.files["encoder"]
    if mode == "static":
        quantize_encoder(encoder_src, encoder_dst, calibration_images, src.preprocessing)
    elif mode == "dynamic":
        quantize_encoder_dynamic(encoder_src, encoder_dst, per_channel)
    else:
        shutil.copyfile(encoder_src, encoder_dst)
    weights = "per-channel" if per_channel else "per-tensor"
    manifest = {k: v for k, v in src.manifest.items() if k not in ("sha256", "format", "format_version")}
    manifest["name"] = src.name + name_suffix
    manifest["quantization"] = {
        "encoder": {"static": "int8 static QDQ, per-channel weights, MinMax on "
                              f"{len(calibration_images)} photos",
                    "dynamic": f"int8 dynamic (MatMul/Gemm weights, {weights})", "fp32": "fp32"}[mode],
        "decoder": f"int8 dynamic (MatMul/Gemm/Gather weights, {weights}); int8 output head, per-layer cache "
                   "(export/optimize.py)"}
    finish_bundle(dst_dir, manifest)
    return dst_dir


def token_agreement(reference: list[list[int]], candidate: list[list[int]]) -> float:
    """Position-wise share of equal tokens, the end of each caption counted as one more token.

    Each pair is compared over the longer of the two, so an early divergence costs
    every token after it; counting the end makes a caption that stops early (or two
    equal empty captions) score as it should.
    """
    agree = total = 0
    for ref, got in zip(reference, candidate):
        ref, got = list(ref) + [None], list(got) + [None]
        agree += sum(a == b for a, b in zip(ref, got))
        total += max(len(ref), len(got))
    return agree / max(total, 1)


def first_step_logits(runtime, features) -> np.ndarray:
    """A runtime's decoder logits after the prompt, SPARC gains at one: where graphs are compared."""
    decoder, rows = runtime.decoder, len(features)
    ids = np.tile(np.asarray(runtime.bundle.tokens.prompt_ids, np.int64), (rows, 1))
    gain = np.ones((runtime.arch.n_layers, rows, features.cross_k.shape[3]), np.float32)
    return decoder.step(ids, decoder.empty_cache(rows), decoder.start(features, 1), gain)[0]


def parity_report(reference, quantized, images, options, reference_captions=None) -> dict[str, float]:
    """Greedy token agreement (see token_agreement) and worst first-step logit error of
    two runtimes on the same photos (reference_captions: the reference's, if already decoded)."""
    ref = reference_captions if reference_captions is not None else reference.caption(images, options)
    got = quantized.caption(images, options)
    logits = [first_step_logits(rt, rt.encode(images)) for rt in (reference, quantized)]
    return {"token_agreement": token_agreement([a.tokens for a in ref], [b.tokens for b in got]),
            "exact_captions": sum(a.tokens == b.tokens for a, b in zip(ref, got)) / len(ref),
            "max_abs_logit_error": float(np.abs(logits[0] - logits[1]).max()), "images": len(images)}


def quantize_verified(fp32_dir: Path, out_dir: Path, calibration_photos: list[Path], parity_photos: list[Path], *,
                      encoders: tuple[str, ...] = ("static",), min_agreement: float = 0.0,
                      name_suffix: str = "") -> dict:
    """The int8 step of every bundle-producing path: an int8 copy of a verified fp32 bundle,
    its greedy agreement with the fp32 bundle on parity_photos recorded in the manifest
    (verification.int8_vs_fp32).

    `encoders` are tried in order (see quantize_bundle) until one keeps min_agreement of
    the fp32 greedy tokens; the last is kept regardless, and the manifest records each
    rejected try. Decoding is greedy with SPARC off: the measure is quantization alone.
    """
    from edgecap.core.model import OnnxCaptioner

    images = [read_image(p) for p in parity_photos]
    fp32 = OnnxCaptioner.load(fp32_dir, provider="cpu")
    options = DecodingOptions(beam_size=1, min_length=0, calibrate=False, rerank=False,
                              max_length=min(20, fp32.arch.max_length - len(fp32.bundle.tokens.prompt_ids)))
    reference = fp32.caption(images, options)
    src = _copy_with_int8_decoder(fp32_dir, out_dir, per_channel=False)  # the same for every encoder tried
    tried = {}
    for encoder in encoders:
        _finish_with_encoder(src, Path(out_dir), calibration_photos, _encoder_mode(encoder), name_suffix, False)
        tried[encoder] = {k: round(v, 4) for k, v in parity_report(
            fp32, OnnxCaptioner.load(out_dir, provider="cpu"), images, options, reference).items()}
        if tried[encoder]["token_agreement"] >= min_agreement:
            break
        log.warning("int8 %s encoder keeps %.2f of the fp32 tokens (< %.2f)", encoder,
                    tried[encoder]["token_agreement"], min_agreement)
    report = {**tried[encoder], "encoder": encoder}
    if len(tried) > 1:
        report["rejected"] = {e: r for e, r in tried.items() if e != encoder}
    verification = dict(load_bundle(fp32_dir).manifest.get("verification", {}))
    update_manifest(out_dir, verification={**verification, "int8_vs_fp32": report})
    return report
