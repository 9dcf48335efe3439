"""The captioner itself: a verified bundle, the onnxruntime sessions, the decode loop, SPARC
calibration and the memory reranker."""
