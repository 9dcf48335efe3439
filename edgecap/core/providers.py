"""Choosing onnxruntime execution providers and creating sessions that fall back step by step.

`auto` tries the accelerators this onnxruntime build has, fastest first, each with the options
that matter on small boards (see provider_options); a provider that fails while a session is
created is dropped with the reason logged, and the next one is tried, down to the CPU.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from pathlib import Path
from typing import Callable, TypeVar

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
GPU_MEMORY_MB = 1024  # CUDA arena cap: the Orin Nano's 8 GB are shared with the CPU and the camera

# Why a session is not on the provider it was asked for (session -> reason).
_fallbacks: "weakref.WeakKeyDictionary[ort.InferenceSession, str]" = weakref.WeakKeyDictionary()


T = TypeVar("T")


class ProviderError(Exception):
    pass


def resolve_providers(requested: str = "auto", available: list[str] | None = None) -> list[str]:
    """Providers to try in order for 'auto', an alias such as 'cuda', or a full ORT name."""
    available = ort.get_available_providers() if available is None else available
    if requested == "auto":
        chosen = [p for p in PREFERENCE if p in available]
        skipped = [p for p in PREFERENCE if p not in available]
        if skipped:
            log.debug("provider auto: not in this onnxruntime build: %s", ", ".join(skipped))
        return chosen if CPU in chosen else [*chosen, CPU]
    name = ALIASES.get(requested.lower(), requested)
    if name not in available:
        raise ProviderError(f"execution provider {requested!r} is not available in this onnxruntime "
                            f"build (available: {', '.join(available)})")
    return [name] if name == CPU else [name, CPU]


def cache_dir() -> Path:
    """Where compiled engines go: $EDGECAP_CACHE_DIR, systemd's $CACHE_DIRECTORY, else ~/.cache/edgecap."""
    for var in ("EDGECAP_CACHE_DIR", "CACHE_DIRECTORY"):
        if os.environ.get(var):
            return Path(os.environ[var].split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgecap"


def provider_options(name: str) -> dict[str, str]:
    """Options for one provider; environment variables override the defaults."""
    if name == "TensorrtExecutionProvider":
        # Building engines takes minutes on a Jetson: keep them (and the timing cache) across
        # restarts. fp16 roughly halves latency on Orin; captions were not re-evaluated in fp16.
        engines = str(cache_dir() / "tensorrt")
        return {"trt_fp16_enable": os.environ.get("EDGECAP_TRT_FP16", "True"),
                "trt_engine_cache_enable": "True", "trt_engine_cache_path": engines,
                "trt_timing_cache_enable": "True", "trt_timing_cache_path": engines}
    if name == "CUDAExecutionProvider":
        limit_mb = int(os.environ.get("EDGECAP_GPU_MEMORY_MB", GPU_MEMORY_MB))
        return {"gpu_mem_limit": str(limit_mb * 1024 * 1024), "arena_extend_strategy": "kSameAsRequested",
                "cudnn_conv_algo_search": "HEURISTIC"}
    if name == "OpenVINOExecutionProvider":
        return {"device_type": os.environ.get("EDGECAP_OPENVINO_DEVICE", "AUTO:NPU,GPU,CPU")}
    if name == "QNNExecutionProvider":
        return {"backend_path": "QnnHtp.dll" if sys.platform == "win32" else "libQnnHtp.so"}
    return {}


def default_threads() -> int:
    # On two cores one intra-op thread is faster (edgecap bench here: 25 ms a caption against
    # 52-66 ms with two; per-step ops are too small to split) and leaves a core for capture
    # and speech. On 4-core boards (Pi 5) one core stays free for capture, the scene gate and
    # speech; not yet measured on the hardware.
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(4, cores - 1)


def pin_blas_threads(threads: int = 1) -> None:
    """Hold numpy's BLAS to `threads` even if numpy was loaded before edgecap set OPENBLAS_NUM_THREADS."""
    import numpy as np  # loaded by then

    from edgecap.core import BLAS_THREADS_AT_LOAD

    blas = getattr(np.__config__, "CONFIG", {}).get("Build Dependencies", {}).get("blas", {}).get("name", "")
    if "openblas" in blas and BLAS_THREADS_AT_LOAD == str(threads):
        return  # OpenBLAS read it when numpy loaded; asking threadpoolctl costs ~12 ms of every start
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return
    if any(p.get("user_api") == "blas" and p.get("num_threads", 1) > threads for p in threadpool_info()):
        threadpool_limits(threads, user_api="blas")


def session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return opts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def create_session(model: bytes, providers: list[str], threads: int | None = None,
                   label: str = "model") -> ort.InferenceSession:
    """A session on the first provider of `providers` that works; each one that fails is
    logged with its reason and dropped, ending on the CPU."""
    opts = session_options(threads)
    external = getattr(model, "external", None)  # edgecap.core.bundle.GraphBytes: weights from hashed bytes only
    label = getattr(model, "source", label)  # name the file in errors
    if external:
        names = list(external)
        opts.add_external_initializers_from_files_in_memory(names, [external[n] for n in names],
                                                            [len(external[n]) for n in names])
    chain = list(providers) or [CPU]
    reasons = []
    while True:
        for name in chain:
            if name == "TensorrtExecutionProvider":
                (cache_dir() / "tensorrt").mkdir(parents=True, exist_ok=True)
        try:
            session = ort.InferenceSession(model, sess_options=opts, providers=[(p, provider_options(p))
                                                                                for p in chain])
            break
        except Exception as exc:  # noqa: BLE001 - any provider failure means: try the next one
            if chain == [CPU]:
                raise ProviderError(f"onnxruntime could not load the {label}: {_first_line(exc)}") from None
            following = chain[1:] or [CPU]
            reasons.append(f"{chain[0]} failed ({_first_line(exc)})")
            log.warning("%s: %s failed (%s); trying %s", label, chain[0], _first_line(exc), following[0])
            chain = following
    used = session.get_providers()[0]
    if used != chain[0]:  # onnxruntime fell back by itself (it prints, but does not raise)
        reasons.append(f"{chain[0]} was not used by onnxruntime")
        log.warning("%s: asked for %s, running on %s", label, chain[0], used)
    if used != providers[0] and reasons:
        _fallbacks[session] = f"{label} runs on {used}: " + "; ".join(reasons)
    if session.get_providers() == [CPU]:
        _release_model_bytes(session)
    return session


def _release_model_bytes(session: ort.InferenceSession) -> None:
    """Let go of the graph's bytes once a CPU-only session is built (5-7 MB per graph).

    onnxruntime's Python session keeps the bytes it was created from for as long as it lives,
    only to rebuild itself on the CPU after an accelerator fails in run(). A session already on
    the CPU has nothing to fall back to, so its fallback is switched off and the bytes dropped.
    edgecap's own fallback (OnnxCaptioner.fall_back_to_cpu) reads the verified bytes again.
    """
    if getattr(session, "_model_bytes", None) is None:  # a path, or an onnxruntime that keeps none
        return
    session.disable_fallback()
    session._model_bytes = None


def in_background(work: Callable[[], T], serial: bool | None = None, name: str = "edgecap-load") -> Callable[[], T]:
    """Start `work` (reading, hashing and building a session) on a second thread; returns the
    function that waits for its result and raises its error. `serial` (None: the rule below for
    loading) runs it at once instead.

    onnxruntime lets go of the GIL while it builds a session, and hashlib while it hashes, so
    graphs load side by side. That pays with three cores or more. On this 2-core machine it did
    not: 0.497 s against 0.482 s to the first caption, with 22% more CPU (load 1.3; two threads
    slow each other down). So on two cores or fewer `work` runs at once, as it does with
    EDGECAP_SERIAL_LOAD=1; EDGECAP_SERIAL_LOAD=0 asks for the thread anyway. Either way its
    error is raised only when the result is waited for. Inference keeps its own thread count.
    """
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - raised where the result is waited for
            box["error"] = exc

    thread = None
    if serial is None:
        serial = os.environ.get("EDGECAP_SERIAL_LOAD", "1" if (os.cpu_count() or 1) <= 2 else "0") != "0"
    if serial:
        run()
    else:
        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()

    def result() -> T:
        if thread is not None:
            thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    return result


def settle(*waiting: Callable[[], object]) -> None:
    """Wait for work started by in_background, whatever its outcome (after another error)."""
    for wait in waiting:
        try:
            wait()
        except BaseException:  # noqa: BLE001 - the error being raised already says what went wrong
            pass


def return_freed_memory() -> None:
    """Hand back to the system the heap pages freed while loading: graph bytes and parse buffers
    (6-12 MB), some in the loading thread's own malloc arena, which later captions would never
    reuse. glibc only; elsewhere nothing happens."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # numpy has loaded it already

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # a libc without malloc_trim (musl)
        pass


def fallback_reason(session: ort.InferenceSession) -> str | None:
    """Why this session is not on the provider it was asked for, or None."""
    return _fallbacks.get(session)


def captioner_fallback(captioner) -> str | None:
    """The load-time fallback of a captioner's sessions (for narration to say once), or None."""
    sessions = [getattr(captioner, "encoder", None), getattr(getattr(captioner, "decoder", None), "session", None)]
    reasons = [fallback_reason(s) for s in sessions if s is not None]
    reasons = [r for r in reasons if r]
    return "; ".join(reasons) or None
