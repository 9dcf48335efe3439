"""The ai.edgecap::CalibratedAttention function body and its place in exported graphs."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")
import onnxruntime as ort  # noqa: E402

from export.model import OP_DOMAIN, OP_NAME  # noqa: E402
from export.onnx_export import IR_VERSION, single_op_model  # noqa: E402


def numpy_reference(q, k, v, gain, bias, scale):
    scores = q @ k.transpose(0, 1, 3, 2) * scale + bias
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = probs @ (v * gain[:, None, :, None])  # gain scales each key's value row
    return out, probs.mean(axis=1)


def test_function_body_matches_numpy_reference():
    rng = np.random.default_rng(0)
    b, h, t, n, d = 2, 3, 4, 7, 5
    q, k, v = (rng.standard_normal((b, h, x, d)).astype(np.float32) for x in (t, n, n))
    gain = rng.uniform(0.8, 1.6, (b, n)).astype(np.float32)
    bias = np.where(rng.random((1, 1, t, n)) < 0.2, -1e9, 0).astype(np.float32)
    model = single_op_model(scale=0.37)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out, mean_probs = session.run(None, {"query": q, "key": k, "value": v, "gain": gain, "bias": bias})
    ref_out, ref_probs = numpy_reference(q, k, v, gain, bias, 0.37)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(mean_probs, ref_probs, atol=1e-6)
    np.testing.assert_allclose(mean_probs.sum(-1), 1.0, atol=1e-5)


def test_exported_decoder_uses_the_op_as_a_local_function(tiny):
    model, bundle = tiny
    decoder = onnx.load(str(bundle / "decoder.onnx"))
    nodes = [n for n in decoder.graph.node if n.domain == OP_DOMAIN and n.op_type == OP_NAME]
    assert len(nodes) == model.cfg.n_layers
    assert any(f.domain == OP_DOMAIN and f.name == OP_NAME for f in decoder.functions)
    assert any(o.domain == OP_DOMAIN for o in decoder.opset_import)
    assert decoder.ir_version <= IR_VERSION
    onnx.checker.check_model(decoder)
