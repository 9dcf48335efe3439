"""Make an exported bundle fast: decoder graph surgery and stored memory statistics.

Decoder: two rewrites of what onnxruntime cannot fold away by itself, both applied to
an existing graph, so a shipped bundle can be fixed without its training checkpoint:

* per-layer cache: the stacked `past_k/past_v/cross_k/cross_v/visual_gain` inputs
  (L, B, ...) are sliced by layer at the top of the graph and `present_*` are
  stacked at the bottom; onnxruntime turns that into a Split and a Concat that copy
  every key/value every step. After the rewrite each layer has its own input and
  output (`past_k_0`, `present_k_0`, ...), bound straight from the previous step.
  Because the visual attention is a broadcasting MatMul, one image's visual keys and
  values (batch 1) then serve all of its beam and sample rows.
* int8 output head: dynamic quantization leaves a tied head as
  DequantizeLinear(int8 embedding) -> Transpose -> MatMul, which onnxruntime runs every
  step (a 3.6 MB fp32 matrix rebuilt and multiplied per token). It becomes an integer
  matmul on the same int8 values and scale, like every other int8 layer, so no step
  dequantizes it.

Memory: the CIDEr-D document frequencies of the memory's captions are stored in
memory.npz (edgecap/core/memory.py), instead of being rebuilt at every load.

`python -m export optimize BUNDLE_DIR` (export.bundle.optimize_bundle) does both in place.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LAYERED_INPUTS = ("past_k", "past_v", "cross_k", "cross_v", "visual_gain")
LAYERED_OUTPUTS = ("present_k", "present_v", "visual_attention")
VISUAL_INPUTS = ("cross_k", "cross_v")
BROADCAST_KEY = "edgecap.visual_broadcast"  # metadata: cross_k_*/cross_v_* may have batch 1


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
    if _broadcasts_visual(model):
        set_metadata(model, BROADCAST_KEY, "1")
    return True


def _broadcasts_visual(model: onnx.ModelProto, rows: int = 3) -> bool:
    """Whether one image's visual keys/values (batch 1) give the same step as repeating them per row."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = [{}, {}]
    for spec in session.get_inputs():
        dims = [d if isinstance(d, int) else 2 for d in spec.shape]
        if spec.name == "input_ids":
            value = rng.integers(4, 8, size=(rows, 1)).astype(np.int64)
        elif spec.name.startswith(VISUAL_INPUTS):
            one = rng.standard_normal([1, *dims[1:]]).astype(np.float32)
            feeds[0][spec.name], feeds[1][spec.name] = one, np.repeat(one, rows, axis=0)
            continue
        else:
            value = rng.uniform(0.5, 1.5, size=[rows, *dims[1:]]).astype(np.float32)
        feeds[0][spec.name] = feeds[1][spec.name] = value
    try:
        one, repeated = (session.run(None, f) for f in feeds)
    except Exception:  # noqa: BLE001 - a graph that cannot broadcast simply fails here
        return False
    return all(np.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(one, repeated))


def int8_head(model: onnx.ModelProto) -> int:
    """Replace every MatMul(x, [Transpose](DequantizeLinear(8-bit constant))) by an integer matmul.

    The new pattern is the one onnxruntime's own dynamic quantization writes
    (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul, fused at load into one
    DynamicQuantizeMatMul), so it runs wherever the other int8 layers run. The weight
    is stored once more, transposed, because a tied embedding still gathers rows of
    the original. Only per-tensor constants are rewritten; returns how many were.
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
        if transposed and [list(a.ints) for a in src.attribute if a.name == "perm"] not in ([], [[1, 0]]):
            continue
        q = numpy_helper.to_array(init[dq.input[0]])
        scale, zero = (numpy_helper.to_array(init[i]) for i in dq.input[1:3])
        if q.ndim != 2 or scale.shape != zero.shape:
            continue
        if scale.size > 1:  # per-channel: only per output column (what a tied head quantized per row is)
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            if scale.ndim != 1 or axis % 2 != (0 if transposed else 1):
                continue
        base = f"{mm.output[0]}_int8"
        weight = np.ascontiguousarray(q.T if transposed else q)  # (K, N)
        zero_name = dq.input[2]
        if weight.dtype == np.int8:
            # uint8 x int8 products saturate in AVX2's 16-bit pair sums; shifted to uint8 they cannot
            weight = (weight.astype(np.int16) + 128).astype(np.uint8)
            zero_name = base + "_weight_zero"
            g.initializer.append(numpy_helper.from_array((zero.astype(np.int16) + 128).astype(np.uint8), zero_name))
        g.initializer.append(numpy_helper.from_array(weight, base + "_weight"))
        new = [helper.make_node("DynamicQuantizeLinear", [mm.input[0]], [base + "_x", base + "_x_scale",
                                                                        base + "_x_zero"], name=base + "_quantize"),
               helper.make_node("MatMulInteger", [base + "_x", base + "_weight", base + "_x_zero", zero_name],
                                [base + "_int32"], name=base + "_matmul"),
               helper.make_node("Cast", [base + "_int32"], [base + "_float"], name=base + "_cast",
                                to=onnx.TensorProto.FLOAT),
               helper.make_node("Mul", [base + "_x_scale", dq.input[1]], [base + "_scale"], name=base + "_scales"),
               helper.make_node("Mul", [base + "_float", base + "_scale"], list(mm.output), name=base + "_rescale")]
        at = list(g.node).index(mm)
        g.node.remove(mm)
        for offset, node in enumerate(new):
            g.node.insert(at + offset, node)
        for dead in ([src, dq] if transposed else [dq]):
            consumers[dead.output[0]] -= 1
            if consumers[dead.output[0]] == 0 and dead in g.node:
                g.node.remove(dead)
        done += 1
    if done:
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
