"""Choosing onnxruntime execution providers and creating sessions that fall back to the CPU."""
from __future__ import annotations

import logging
import os

import onnxruntime as ort

log = logging.getLogger("edgecap")

# Fastest first: NVIDIA (Jetson, desktop GPUs), Intel, Qualcomm and Apple NPUs, then the CPU.
PREFERENCE = [
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "QNNExecutionProvider",
    "CoreMLExecutionProvider",
    "CPUExecutionProvider",
]
ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
CPU = "CPUExecutionProvider"


class ProviderError(Exception):
    pass


def resolve_providers(requested: str = "auto") -> list[str]:
    """Providers to try in order for 'auto', an alias such as 'cuda', or a full ORT name."""
    available = ort.get_available_providers()
    if requested == "auto":
        chosen = [p for p in PREFERENCE if p in available]
        skipped = [p for p in PREFERENCE if p not in available]
        if skipped:
            log.debug("provider auto: not in this onnxruntime build: %s", ", ".join(skipped))
        return chosen or [CPU]
    name = ALIASES.get(requested.lower(), requested)
    if name not in available:
        raise ProviderError(f"execution provider {requested!r} is not available in this onnxruntime "
                            f"build (available: {', '.join(available)})")
    return [name] if name == CPU else [name, CPU]


def default_threads() -> int:
    # On two cores one intra-op thread is faster (edgecap bench here: 25 ms a caption against
    # 52-66 ms with two; per-step ops are too small to split) and leaves a core for capture
    # and speech.
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(4, cores)


def session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return opts


def create_session(model: bytes, providers: list[str], threads: int | None = None,
                   label: str = "model") -> ort.InferenceSession:
    """Create a session on the preferred providers; if that fails, log why and use the CPU."""
    opts = session_options(threads)
    external = getattr(model, "external", None)  # edgecap.bundle.GraphBytes: weights from hashed bytes only
    label = getattr(model, "source", label)  # name the file in errors
    if external:
        names = list(external)
        opts.add_external_initializers_from_files_in_memory(names, [external[n] for n in names],
                                                            [len(external[n]) for n in names])
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - any provider failure means: fall back
        if providers == [CPU]:
            raise ProviderError(f"onnxruntime could not load the {label}: {str(exc).splitlines()[0]}") from None
        log.warning("%s: %s failed (%s); falling back to CPU", label, providers[0], str(exc).splitlines()[0])
        session = ort.InferenceSession(model, sess_options=opts, providers=[CPU])
    used = session.get_providers()
    if used and providers and used[0] != providers[0]:
        log.warning("%s: asked for %s, running on %s", label, providers[0], used[0])
    return session
