"""torch reference vs exported ONNX: logits, greedy tokens with and without SPARC, int8."""
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgecap.core.calibration import CalibrationSpec  # noqa: E402
from edgecap.core.decoding import DecodingOptions  # noqa: E402
from edgecap.core.image import normalize, resize_for_model  # noqa: E402
from export.generate import captioner_generate  # noqa: E402

GREEDY = dict(beam_size=1, min_length=0, max_length=20, rerank=False)  # the decode loop alone


def pixels_of(captioner, photos):
    prep = captioner.bundle.preprocessing
    return np.stack([normalize(resize_for_model(p, prep), prep) for p in photos])


def test_step_logits_match_torch(tiny, tiny_captioner, photos):
    model, _ = tiny
    pixels = pixels_of(tiny_captioner, photos)
    features = tiny_captioner.encode(photos)
    with torch.no_grad():
        cross_k, cross_v = model.visual_cache(model.grid_tokens(torch.from_numpy(pixels)))
    np.testing.assert_allclose(features.cross_k, cross_k.numpy(), atol=1e-5)

    rng = np.random.default_rng(1)
    ids = rng.integers(4, model.cfg.vocab_size, size=(len(photos), 6))
    gain = rng.uniform(1.0, 1.5, size=(model.cfg.n_layers, len(photos), cross_k.shape[3])).astype(np.float32)
    dec = tiny_captioner.decoder
    cache, past = dec.empty_cache(len(photos)), model.empty_cache(len(photos))
    rows = dec.start(features, 1)
    worst = 0.0
    for t in range(6):  # prompt-like first chunk of 2, then single steps
        chunk = ids[:, :2] if t == 0 else ids[:, t + 1:t + 2]
        if t == 5:
            break
        logits, cache, attention = dec.step(chunk, cache, rows, gain)
        with torch.no_grad():
            ref_logits, pk, pv, ref_att = model.step(torch.from_numpy(chunk), past, past if t == 0 else pv,
                                                     cross_k, cross_v, torch.from_numpy(gain))
        past = pk
        worst = max(worst, float(np.abs(logits - ref_logits.numpy()).max()))
        np.testing.assert_allclose(attention, ref_att.numpy(), atol=1e-5)
    assert worst < 1e-3, worst


@pytest.mark.parametrize("calibrated", [True, False], ids=["sparc-on", "sparc-off"])
def test_greedy_tokens_match_torch_sparc_generate(tiny, tiny_captioner, photos, calibrated):
    model, _ = tiny
    spec = tiny_captioner.bundle.calibration if calibrated else None
    ref = captioner_generate(model, torch.from_numpy(pixels_of(tiny_captioner, photos)), max_new_tokens=20,
                             calibration=spec)
    got = tiny_captioner.caption(photos, DecodingOptions(**GREEDY, calibrate=calibrated))
    assert [r.tokens for r in got] == ref
    assert all(len(t) > 0 for t in ref)


@pytest.mark.parametrize("calibrated", [True, False], ids=["sparc-on", "sparc-off"])
def test_training_time_decoding_is_the_shipped_loop_on_torch(tiny, tiny_captioner, photos, calibrated):
    """export.torch_decoder drives edgecap.core.decoding over the torch model: greedy equals the
    reference, and beam search equals the runtime's beam search on the exported graphs."""
    from export.torch_decoder import caption_tokens

    model, _ = tiny
    spec = tiny_captioner.bundle.calibration if calibrated else None
    with torch.no_grad():
        grid = model.grid_tokens(torch.from_numpy(pixels_of(tiny_captioner, photos)))
    ref = captioner_generate(model, torch.from_numpy(pixels_of(tiny_captioner, photos)), max_new_tokens=20,
                             calibration=spec)
    assert caption_tokens(model, grid, spec) == ref
    beam = DecodingOptions(beam_size=3, min_length=2, max_length=12, no_repeat_ngram_size=2, rerank=False)
    runtime = tiny_captioner.caption(photos, replace(beam, calibrate=calibrated))
    assert caption_tokens(model, grid, spec, beam) == [r.tokens for r in runtime]


def test_sparc_selects_tokens_and_changes_captions(tiny_captioner, photos):
    on = tiny_captioner.caption(photos, DecodingOptions(**GREEDY))
    off = tiny_captioner.caption(photos, DecodingOptions(**GREEDY, calibrate=False))
    assert all(r.sparc_selected > 0 for r in on)
    assert all(r.sparc_selected == 0 for r in off)
    assert any(a.tokens != b.tokens for a, b in zip(on, off))
    # alpha = 1 makes the gain a no-op whatever is selected
    neutral = tiny_captioner.caption(photos, DecodingOptions(**GREEDY, calibration=CalibrationSpec(alpha=1.0)))
    assert [r.tokens for r in neutral] == [r.tokens for r in off]


def test_int8_bundle_keeps_most_tokens(tiny, tiny_captioner, photo_paths, photos, tmp_path):
    from edgecap.core.model import OnnxCaptioner
    from export.quantize import parity_report, quantize_bundle

    int8_dir = quantize_bundle(tiny[1], tmp_path / "int8", photo_paths)
    int8 = OnnxCaptioner.load(int8_dir, provider="cpu")
    assert (int8_dir / "decoder.onnx").stat().st_size < (tiny[1] / "decoder.onnx").stat().st_size
    report = parity_report(tiny_captioner, int8, photos, DecodingOptions(**GREEDY))
    assert 0.0 <= report["token_agreement"] <= 1.0
    assert report["max_abs_logit_error"] < 5.0
    assert report["token_agreement"] >= 0.3  # random weights: int8 noise flips near-ties


def test_a_rejected_int8_encoder_falls_back_to_the_next_and_the_manifest_says_so(tiny, photo_paths, tmp_path):
    import json

    from export.quantize import quantize_verified

    out = tmp_path / "int8"
    # No encoder can keep more than all tokens, so static is rejected and fp32, the last, is kept.
    report = quantize_verified(tiny[1], out, photo_paths, photo_paths, encoders=("static", "fp32"), min_agreement=1.01)
    assert report["encoder"] == "fp32" and set(report["rejected"]) == {"static"}
    assert (out / "encoder.onnx").read_bytes() == (tiny[1] / "encoder.onnx").read_bytes()
    assert (out / "decoder.onnx").stat().st_size < (tiny[1] / "decoder.onnx").stat().st_size
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["encoder"] == "fp32"
    assert manifest["verification"]["int8_vs_fp32"]["encoder"] == "fp32"
