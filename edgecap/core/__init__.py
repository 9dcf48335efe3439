"""The captioner itself: a verified bundle, the onnxruntime sessions, the decode loop, SPARC
calibration and the memory reranker."""
import os as _os
import sys as _sys

# The thread count OpenBLAS reads when numpy loads (edgecap/__init__.py sets it before this runs),
# or None when numpy was loaded before edgecap: then providers.pin_blas_threads has to look.
BLAS_THREADS_AT_LOAD = None if "numpy" in _sys.modules else _os.environ.get("OPENBLAS_NUM_THREADS")
