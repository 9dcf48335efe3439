"""edgecap: offline, on-device image captioning that speaks. Runs on numpy + onnxruntime only."""
import os

# onnxruntime reads this once, when it loads: without it, runs longer than ~10 s make DNS
# look-ups for Microsoft's telemetry endpoint and queue events under ~/.cache/Microsoft.
# Every entry point imports this package before onnxruntime. Offline means offline.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

# edgecap's own numpy matmuls are tiny; a second OpenBLAS thread only busy-waits on the core
# left free for capture and speech. Set before numpy loads (see also edgecap.core.model.pin_blas_threads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

from edgecap.core.calibration import CalibrationSpec  # noqa: E402
from edgecap.core.decoding import DecodingOptions, preset  # noqa: E402


def load_model(model=None, provider: str = "auto", threads: int | None = None):
    """The captioner for a bundle folder (default: the shipped edgecap-base)."""
    from edgecap.core.model import OnnxCaptioner

    return OnnxCaptioner.load(model, provider=provider, threads=threads)


__all__ = ["CalibrationSpec", "DecodingOptions", "load_model", "preset", "__version__"]
