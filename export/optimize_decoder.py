"""Graph surgery on an exported decoder: what onnxruntime cannot fold away by itself.

Two rewrites, both applied to an existing graph, so a shipped bundle can be fixed
without its training checkpoint:

* per-layer cache: the stacked `past_k/past_v/cross_k/cross_v/visual_gain` inputs
  (L, B, ...) are sliced by layer at the top of the graph and `present_*` are
  stacked at the bottom; onnxruntime turns that into a Split and a Concat that copy
  every key/value every step. After the rewrite each layer has its own input and
  output (`past_k_0`, `present_k_0`, ...), bound straight from the previous step.
  Because the visual attention is a broadcasting MatMul, one image's visual keys and
  values (batch 1) then serve all of its beam and sample rows.
* int8 output head: dynamic quantization leaves a tied head as
  DequantizeLinear(int8 embedding) -> Transpose -> MatMul, which onnxruntime runs every
  step (a 3.6 MB fp32 matrix rebuilt and multiplied per token). It becomes one
  com.microsoft MatMulNBits (8 bits, the same int8 values and scale, activations
  quantized per row), so no step dequantizes it.

`python -m export.optimize_decoder BUNDLE_DIR` rewrites the bundle's decoder.onnx in
place and rewrites its manifest (hashes) through edgecap.bundle.write_manifest.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LAYERED_INPUTS = ("past_k", "past_v", "cross_k", "cross_v", "visual_gain")
LAYERED_OUTPUTS = ("present_k", "present_v", "visual_attention")
VISUAL_INPUTS = ("cross_k", "cross_v")
BROADCAST_KEY = "edgecap.visual_broadcast"  # metadata: cross_k_*/cross_v_* may have batch 1
NBITS_BLOCK = 64


def _scalar_index(graph: onnx.GraphProto, name: str) -> int | None:
    for init in graph.initializer:
        if init.name == name:
            value = numpy_helper.to_array(init)
            return int(value) if value.ndim == 0 else None
    return None


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def split_layers(model: onnx.ModelProto) -> bool:
    """Per-layer cache inputs and outputs; False (model unchanged) when the pattern is absent."""
    g = model.graph
    inputs = {i.name: i for i in g.input}
    if not all(n in inputs for n in LAYERED_INPUTS):
        return False
    gathers: dict[str, dict[int, onnx.NodeProto]] = {n: {} for n in LAYERED_INPUTS}
    shapes: list[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type == "Gather" and node.input[0] in gathers:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            index = _scalar_index(g, node.input[1])
            if axis != 0 or index is None:
                return False
            gathers[node.input[0]][index] = node
        elif node.op_type == "Shape" and node.input[0] in gathers:
            shapes.append(node)
        elif any(i in gathers for i in node.input):
            return False  # used some other way: leave the graph alone
    producers = {o: n for n in g.node for o in n.output}
    stacks = {}
    for name in LAYERED_OUTPUTS:
        concat = producers.get(name)
        if concat is None or concat.op_type != "Concat":
            return False
        parts = [producers.get(i) for i in concat.input]
        if not all(p is not None and p.op_type == "Unsqueeze" for p in parts):
            return False
        stacks[name] = (concat, parts)
    n_layers = len(gathers["past_k"])
    if any(len(v) != n_layers for v in gathers.values()) or any(len(p) != n_layers for _, p in stacks.values()):
        return False

    for node in shapes:  # Shape(stacked)[s:e] -> Shape(layer 0)[s-1:e-1]; the batch comes from input_ids
        attrs = {a.name: a.i for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end")
        if start < 1 or end is None or end <= start:
            return False
        source = f"{node.input[0]}_0"
        if node.input[0] in VISUAL_INPUTS and (start, end) == (1, 2):
            source, start, end = "input_ids", 1, 2
        del node.attribute[:]
        node.attribute.extend([helper.make_attribute("start", start - 1), helper.make_attribute("end", end - 1)])
        node.input[0] = source

    new_inputs = []
    for vi in g.input:
        if vi.name not in gathers:
            new_inputs.append(vi)
            continue
        dims = list(vi.type.tensor_type.shape.dim)[1:]
        for layer in range(n_layers):
            shape = ["visual_batch" if vi.name in VISUAL_INPUTS and d.dim_param == "batch"
                     else d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
            new = helper.make_tensor_value_info(f"{vi.name}_{layer}", vi.type.tensor_type.elem_type, shape)
            new_inputs.append(new)
            node = gathers[vi.name][layer]
            g.node.remove(node)
            _rename(g, node.output[0], new.name)
    del g.input[:]
    g.input.extend(new_inputs)

    new_outputs = []
    for vo in g.output:
        if vo.name not in stacks:
            new_outputs.append(vo)
            continue
        concat, parts = stacks[vo.name]
        g.node.remove(concat)
        for layer, unsqueeze in enumerate(parts):
            g.node.remove(unsqueeze)
            name = f"{vo.name}_{layer}"
            _rename(g, unsqueeze.input[0], name)
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
                    for d in list(vo.type.tensor_type.shape.dim)[1:]]
            new_outputs.append(helper.make_tensor_value_info(name, vo.type.tensor_type.elem_type, dims))
    del g.output[:]
    g.output.extend(new_outputs)
    _drop_unused_initializers(model)
    set_metadata(model, BROADCAST_KEY, "1")
    return True


def int8_head(model: onnx.ModelProto) -> int:
    """Replace every MatMul(x, [Transpose](DequantizeLinear(int8/uint8 constant))) by MatMulNBits.

    Only per-tensor quantized constants with K a multiple of the block are rewritten;
    returns how many were.
    """
    g = model.graph
    init = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    done = 0
    for mm in [n for n in g.node if n.op_type == "MatMul"]:
        src = producers.get(mm.input[1])
        transposed = src is not None and src.op_type == "Transpose"
        dq = producers.get(src.input[0]) if transposed else src
        if dq is None or dq.op_type != "DequantizeLinear" or not all(i in init for i in dq.input[:3]):
            continue
        if transposed and [a.ints for a in src.attribute if a.name == "perm"] not in ([], [[1, 0]]):
            continue
        q = numpy_helper.to_array(init[dq.input[0]])
        scale, zero = (numpy_helper.to_array(init[i]) for i in dq.input[1:3])
        if q.ndim != 2 or scale.size != 1 or zero.size != 1:
            continue
        # MatMulNBits wants B as (N, K) unsigned, zero point included: (int8 + 128) keeps the values exact.
        nk = q if transposed else q.T
        shift = 128 if q.dtype == np.int8 else 0
        n, k = nk.shape
        if k % NBITS_BLOCK:
            continue
        blocks = k // NBITS_BLOCK
        b = (nk.astype(np.int16) + shift).astype(np.uint8).reshape(n, blocks, NBITS_BLOCK)
        base = f"{mm.output[0]}_nbits"
        g.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(b), base + "_B"),
            numpy_helper.from_array(np.full(n * blocks, float(scale), np.float32), base + "_scales"),
            numpy_helper.from_array(np.full(n * blocks, int(zero) + shift, np.uint8), base + "_zero_points")])
        node = helper.make_node("MatMulNBits", [mm.input[0], base + "_B", base + "_scales", base + "_zero_points"],
                                list(mm.output), name=base, domain="com.microsoft", K=k, N=n, bits=8,
                                block_size=NBITS_BLOCK, accuracy_level=4)
        g.node.insert(list(g.node).index(mm), node)
        g.node.remove(mm)
        for dead in ([src, dq] if transposed else [dq]):
            consumers[dead.output[0]] -= 1
            if consumers[dead.output[0]] == 0 and dead in g.node:
                g.node.remove(dead)
        done += 1
    if done:
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        _drop_unused_initializers(model)
    return done


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    model.metadata_props.add(key=key, value=value)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    g = model.graph
    used = {i for n in g.node for i in n.input} | {i for f in model.functions for n in f.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def optimize_decoder(src: Path, dst: Path) -> dict[str, int | bool]:
    model = onnx.load(str(src))
    report = {"per_layer_cache": split_layers(model), "int8_heads": int8_head(model)}
    onnx.checker.check_model(model)
    onnx.save_model(model, str(dst))
    return report


def optimize_bundle(bundle_dir: Path) -> dict[str, int | bool]:
    from edgecap.bundle import load_bundle, write_manifest

    bundle = load_bundle(bundle_dir)
    path = bundle.path / bundle.files["decoder"]
    report = optimize_decoder(path, path)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("sha256", "format", "format_version")}
    quant = dict(manifest.get("quantization", {}))
    if report["int8_heads"] and "head" not in quant.get("decoder", ""):
        quant["decoder"] = quant.get("decoder", "") + "; output head int8 MatMulNBits (export/optimize_decoder.py)"
    manifest["quantization"] = quant
    write_manifest(bundle.path, manifest)
    load_bundle(bundle.path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.optimize_decoder", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle folder whose decoder.onnx is rewritten in place")
    args = parser.parse_args(argv)
    print(json.dumps(optimize_bundle(args.bundle)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
