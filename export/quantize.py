"""int8 quantization of a bundle: dynamic for the decoder, static QDQ for the encoder."""
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
from edgecap.bundle import load_bundle, write_manifest
from edgecap.image import normalize, read_image, resize_for_model
from export.onnx_export import IR_VERSION, attach_calibrated_attention

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


def quantize_decoder(src: Path, dst: Path) -> None:
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False,
                     op_types_to_quantize=["MatMul", "Gemm", "Gather"])
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


def quantize_bundle(src_dir: Path, dst_dir: Path, calibration_images: list[Path], *, encoder: bool = True,
                    name_suffix: str = "-int8") -> Path:
    """Write an int8 copy of a verified fp32 bundle."""
    src = load_bundle(src_dir)
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for rel in src.manifest["sha256"]:
        (dst_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.path / rel, dst_dir / rel)
    quantize_decoder(src.path / src.files["decoder"], dst_dir / src.files["decoder"])
    if encoder:
        quantize_encoder(src.path / src.files["encoder"], dst_dir / src.files["encoder"], calibration_images,
                         src.preprocessing)
    manifest = {k: v for k, v in src.manifest.items() if k not in ("sha256", "format", "format_version")}
    manifest["name"] = src.name + name_suffix
    manifest["quantization"] = {"encoder": "int8 static QDQ, per-channel weights, MinMax on "
                                           f"{len(calibration_images)} photos" if encoder else "fp32",
                                "decoder": "int8 dynamic (MatMul/Gemm/Gather weights)"}
    write_manifest(dst_dir, manifest)
    load_bundle(dst_dir)
    return dst_dir


def parity_report(reference, quantized, images, options) -> dict[str, float]:
    """Greedy token agreement and worst first-step logit error of two runtimes on the same photos.

    Agreement is position-wise over the longer caption of each pair, so an early
    divergence costs every token after it.
    """
    ref = reference.caption(images, options)
    got = quantized.caption(images, options)
    agree = total = 0
    for a, b in zip(ref, got):
        n = max(len(a.tokens), len(b.tokens), 1)
        agree += sum(x == y for x, y in zip(a.tokens, b.tokens))
        total += n
    worst = 0.0
    for runtime_pair in [(reference, quantized)]:
        feats = [rt.encode(images) for rt in runtime_pair]
        logits = []
        for rt, f in zip(runtime_pair, feats):
            dec = rt.decoder
            ids = np.tile(np.asarray(rt.bundle.tokens.prompt_ids, np.int64), (len(images), 1))
            gain = np.ones((rt.arch.n_layers, len(images), f.cross_k.shape[3]), np.float32)
            logits.append(dec.step(ids, dec.empty_cache(len(images)), dec.start(f, 1), gain)[0])
        worst = max(worst, float(np.abs(logits[0] - logits[1]).max()))
    return {"token_agreement": agree / max(total, 1), "exact_captions": sum(a.tokens == b.tokens
                                                                             for a, b in zip(ref, got)) / len(ref),
            "max_abs_logit_error": worst, "images": len(images)}
