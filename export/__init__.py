"""Build-time tools (torch). Importing edgecap first turns onnxruntime telemetry off."""
import edgecap  # noqa: F401  (sets ORT_DISABLE_TELEMETRY before onnxruntime can load)
