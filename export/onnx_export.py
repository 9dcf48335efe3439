"""Export a captioner to two ONNX graphs whose visual attention is ai.edgecap::CalibratedAttention.

encoder.onnx  pixels (B,3,S,S) -> cross_k, cross_v (L,B,H,N,hd), pooled (B,C)
decoder.onnx  input_ids (B,T), past_k, past_v (L,B,H,P,hd), cross_k, cross_v,
              visual_gain (L,B,N) -> logits (B,V), present_k, present_v (L,B,H,P+T,hd),
              visual_attention (L,B,N)

The custom op ships as a model-local ONNX function with a standard-op body, so any
onnxruntime build (and EPs that never heard of the op) runs it by inlining.
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from export.model import OP_DOMAIN, OP_NAME

log = logging.getLogger(__name__)

OPSET = 18
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; 10 also loads on JetPack-era 1.17+

ENCODER_OUTPUTS = ["cross_k", "cross_v", "pooled"]
DECODER_INPUTS = ["input_ids", "past_k", "past_v", "cross_k", "cross_v", "visual_gain"]
DECODER_OUTPUTS = ["logits", "present_k", "present_v", "visual_attention"]


def calibrated_attention_function(opset: int = OPSET) -> onnx.FunctionProto:
    """CalibratedAttention(query, key, value, gain, bias) -> (output, mean_probs)."""
    scale_node = helper.make_node("Constant", [], ["scale_value"])
    scale_node.attribute.append(onnx.AttributeProto(name="value_float", ref_attr_name="scale",
                                                    type=onnx.AttributeProto.FLOAT))
    nodes = [
        helper.make_node("Transpose", ["key"], ["key_t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["query", "key_t"], ["scores_raw"]),
        scale_node,
        helper.make_node("Mul", ["scores_raw", "scale_value"], ["scores_scaled"]),
        helper.make_node("Add", ["scores_scaled", "bias"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("Constant", [], ["head_axis"], value_ints=[1]),
        helper.make_node("ReduceMean", ["probs", "head_axis"], ["mean_probs"], keepdims=0),
        helper.make_node("Constant", [], ["gain_axes"], value_ints=[1, 2]),
        helper.make_node("Unsqueeze", ["gain", "gain_axes"], ["gain_b"]),
        helper.make_node("Mul", ["probs", "gain_b"], ["probs_gained"]),
        helper.make_node("MatMul", ["probs_gained", "value"], ["output"]),
    ]
    return helper.make_function(
        OP_DOMAIN, OP_NAME, ["query", "key", "value", "gain", "bias"], ["output", "mean_probs"],
        nodes, [helper.make_opsetid("", opset)], attributes=["scale"],
        doc_string="Attention whose key j's value is scaled by gain[:, j]; also returns head-mean probabilities.",
    )


def attach_calibrated_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give the exported model the op's function body and the domain import."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if not any(f.domain == OP_DOMAIN and f.name == OP_NAME for f in model.functions):
        model.functions.append(calibrated_attention_function(opset))
    if not any(o.domain == OP_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(OP_DOMAIN, 1))
    return model


def count_calibrated_nodes(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.domain == OP_DOMAIN and n.op_type == OP_NAME)


def save_model(model: onnx.ModelProto, path: Path) -> None:
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))


class EncoderGraph(nn.Module):
    def __init__(self, captioner):
        super().__init__()
        self.captioner = captioner

    def forward(self, pixels):
        grid = self.captioner.grid_tokens(pixels)
        cross_k, cross_v = self.captioner.visual_cache(grid)
        return cross_k, cross_v, grid.mean(dim=1)


class DecoderGraph(nn.Module):
    def __init__(self, captioner):
        super().__init__()
        self.captioner = captioner

    def forward(self, input_ids, past_k, past_v, cross_k, cross_v, visual_gain):
        return self.captioner.step(input_ids, past_k, past_v, cross_k, cross_v, visual_gain)


def _export(module: nn.Module, args: tuple, input_names, output_names, dynamic_shapes, path: Path) -> onnx.ModelProto:
    module.eval()
    program = torch.onnx.export(module, args, input_names=input_names, output_names=output_names,
                                dynamic_shapes=dynamic_shapes, dynamo=True, opset_version=OPSET,
                                optimize=True, verbose=False)
    model = attach_calibrated_attention(program.model_proto)
    save_model(model, path)
    return model


def export_graphs(encoder: nn.Module, decoder: nn.Module, pixels: torch.Tensor, decoder_inputs: tuple,
                  n_layers: int, max_len: int, out_dir: Path) -> dict[str, Path]:
    """Write encoder.onnx (encoder(pixels)) and decoder.onnx (decoder(*decoder_inputs)), fp32,
    with the contract's names and dynamic axes, for any captioner that follows it.

    Example sizes must be > 1 where an axis is dynamic, so that torch.export keeps them
    symbolic. Checks that the decoder has one calibrated attention node per layer.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("tokens", min=1, max=max_len)
    past = torch.export.Dim("past", min=0, max=max_len)
    dyn = {"input_ids": {0: batch, 1: seq}, "past_k": {1: batch, 3: past}, "past_v": {1: batch, 3: past},
           "cross_k": {1: batch}, "cross_v": {1: batch}, "visual_gain": {1: batch}}
    enc_path, dec_path = out_dir / "encoder.onnx", out_dir / "decoder.onnx"
    with torch.no_grad():
        _export(encoder, (pixels,), ["pixels"], ENCODER_OUTPUTS, {"pixels": {0: batch}}, enc_path)
        dec = _export(decoder, decoder_inputs, DECODER_INPUTS, DECODER_OUTPUTS, dyn, dec_path)
    n_nodes = count_calibrated_nodes(dec)
    if n_nodes != n_layers:
        raise RuntimeError(f"expected {n_layers} {OP_DOMAIN}::{OP_NAME} nodes in the decoder, found {n_nodes}")
    log.info("exported %s and %s (%d calibrated attention nodes)", enc_path, dec_path, n_nodes)
    return {"encoder": enc_path, "decoder": dec_path}


def export_captioner(captioner, out_dir: Path) -> dict[str, Path]:
    """Write encoder.onnx and decoder.onnx (fp32) for an edgecap Captioner."""
    cfg = captioner.cfg
    captioner = captioner.eval()
    encoder = EncoderGraph(captioner)
    pixels = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        cross_k, cross_v, _ = encoder(pixels)
    past_k = torch.randn(cfg.n_layers, 2, cfg.n_heads, 3, cfg.head_dim)
    args = (torch.randint(3, cfg.vocab_size, (2, 2)), past_k, past_k.clone(), cross_k, cross_v,
            torch.ones(cfg.n_layers, 2, cross_k.shape[3]))
    return export_graphs(encoder, DecoderGraph(captioner), pixels, args, cfg.n_layers, cfg.max_len, out_dir)


def single_op_model(opset: int = OPSET, scale: float = 0.5) -> onnx.ModelProto:
    """A model holding one CalibratedAttention node: for testing the function body."""
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, None) for n in ("query", "key", "value", "gain", "bias")]
    outputs = [helper.make_tensor_value_info(n, f, None) for n in ("output", "mean_probs")]
    node = helper.make_node(OP_NAME, [i.name for i in inputs], [o.name for o in outputs], domain=OP_DOMAIN,
                            scale=scale)
    graph = helper.make_graph([node], "calibrated_attention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = attach_calibrated_attention(model)
    model.ir_version = IR_VERSION
    return model
