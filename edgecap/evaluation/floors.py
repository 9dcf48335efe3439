"""Hardware floors measured at run time: how fast could a stage possibly be on this machine?

* memory bandwidth: a large numpy copy on one thread (bytes read + written per second);
  a decoder step must at least stream its weights once.
* int8 matmul throughput: onnxruntime's MatMulInteger on one thread, large enough to be
  compute bound; an encoder must at least do its multiply-adds.

Both are best-of-N thread CPU times, so a busy machine that takes the core away does not
lower the floor (it still shares the memory bus and caches, which does).

Graph statistics (weights a decoder step reads, multiply-adds of an encoder) are read
off the ONNX files with the `onnx` package when it is installed; without it those floors
are left out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

MATMUL_OPS = ("MatMul", "MatMulInteger", "Gemm", "DynamicQuantizeMatMul", "MatMulNBits")


@dataclass(frozen=True)
class Floors:
    bandwidth_gbs: float
    int8_tops: float | None


def memory_bandwidth_gbs(mb: int = 128, repeats: int = 7) -> float:
    src = np.ones(mb * 1024 * 1024 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        np.copyto(dst, src)
        best = min(best, time.thread_time() - start)
    return round(2 * src.nbytes / best / 1e9, 2)


def int8_matmul_tops(m: int = 256, k: int = 1024, n: int = 1024, repeats: int = 20) -> float | None:
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        return None
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_floor",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [k, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.integers(0, 255, (m, k), dtype=np.uint8), "b": rng.integers(-127, 127, (k, n), dtype=np.int8)}
    session.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        session.run(None, feed)
        best = min(best, time.thread_time() - start)
    del onnx
    return round(2 * m * k * n / best / 1e12, 3)


def measure_floors() -> Floors:
    return Floors(bandwidth_gbs=memory_bandwidth_gbs(), int8_tops=int8_matmul_tops())


def decoder_weight_bytes(model_bytes: bytes) -> int | None:
    """Bytes of the constant matrices a decoder step multiplies by (its token embedding is only gathered)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return None
    model = onnx.load_from_string(model_bytes)
    sizes = {i.name: numpy_helper.to_array(i).nbytes for i in model.graph.initializer if len(i.dims) >= 2}
    producers = {o: n for n in model.graph.node for o in n.output}
    total, seen = 0, set()
    for node in model.graph.node:
        if node.op_type not in MATMUL_OPS:
            continue
        for name in node.input[:2]:
            source = producers.get(name)
            while source is not None and source.op_type in ("Transpose", "DequantizeLinear") and name not in sizes:
                name = source.input[0]
                source = producers.get(name)
            if name in sizes and name not in seen:
                seen.add(name)
                total += sizes[name]
    return total or None


def graph_macs(model_bytes: bytes) -> int | None:
    """Multiply-adds of one image through a graph (Conv, MatMul, Gemm), from inferred shapes."""
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError:
        return None
    model = onnx.load_from_string(model_bytes)
    for vi in list(model.graph.input):
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 1
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - unknown custom ops: no floor rather than a wrong one
        return None
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    producers = {o: n for n in model.graph.node for o in n.output}

    def shape_of(name):
        while name not in shapes and name in producers and producers[name].op_type in ("DequantizeLinear",
                                                                                        "QuantizeLinear"):
            name = producers[name].input[0]
        return shapes.get(name)

    macs = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out or 0 in out:
            continue
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w = shape_of(node.input[3] if node.op_type == "QLinearConv" else node.input[1])
            if w:
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in MATMUL_OPS:
            a = shape_of(node.input[0])
            if a:
                macs += int(np.prod(out)) * a[-1]
    del numpy_helper
    return macs or None
