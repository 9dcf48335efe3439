"""Provider order for `auto`, the options each gets, and falling back to a real CPU session."""
from pathlib import Path

import pytest

from edgecap.core import providers as P

REPO = Path(__file__).resolve().parents[1]
ENCODER = REPO / "models" / "edgecap-base" / "encoder.onnx"
EVERYTHING = ["AzureExecutionProvider", "CPUExecutionProvider", "CoreMLExecutionProvider", "QNNExecutionProvider",
              "OpenVINOExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]


def test_auto_orders_accelerators_fastest_first():
    assert P.resolve_providers("auto", EVERYTHING) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider", "QNNExecutionProvider",
        "CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert P.resolve_providers("auto", ["CPUExecutionProvider", "OpenVINOExecutionProvider"]) == [
        "OpenVINOExecutionProvider", "CPUExecutionProvider"]
    assert P.resolve_providers("auto", ["CUDAExecutionProvider"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_a_named_provider_keeps_the_cpu_behind_it_and_a_missing_one_is_an_error():
    assert P.resolve_providers("trt", EVERYTHING) == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert P.resolve_providers("cpu", EVERYTHING) == ["CPUExecutionProvider"]
    with pytest.raises(P.ProviderError, match="not available"):
        P.resolve_providers("cuda", ["CPUExecutionProvider"])


def test_provider_options(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECAP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("EDGECAP_GPU_MEMORY_MB", "512")
    monkeypatch.setenv("EDGECAP_OPENVINO_DEVICE", "NPU")
    trt = P.provider_options("TensorrtExecutionProvider")
    assert trt["trt_fp16_enable"] == "True" and trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    cuda = P.provider_options("CUDAExecutionProvider")
    assert cuda["gpu_mem_limit"] == str(512 * 2**20) and cuda["arena_extend_strategy"] == "kSameAsRequested"
    assert P.provider_options("OpenVINOExecutionProvider") == {"device_type": "NPU"}
    assert P.provider_options("CPUExecutionProvider") == {}


@pytest.mark.skipif(not ENCODER.is_file(), reason="no shipped model")
def test_an_accelerator_that_cannot_run_falls_back_to_a_working_cpu_session(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("EDGECAP_CACHE_DIR", str(tmp_path))
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
              if p not in __import__("onnxruntime").get_available_providers()]
    if not wanted:
        pytest.skip("this onnxruntime really has the GPU providers")
    session = P.create_session(ENCODER.read_bytes(), [*wanted, P.CPU], label="encoder")
    assert session.get_providers()[0] == P.CPU
    reason = P.fallback_reason(session)
    assert reason.startswith("encoder runs on CPUExecutionProvider") and wanted[0] in reason
    assert any(wanted[0] in r.message for r in caplog.records)
    import numpy as np

    pixels = np.zeros([1 if isinstance(d, str) else d for d in session.get_inputs()[0].shape], np.float32)
    assert session.run(None, {session.get_inputs()[0].name: pixels})[0].size > 0
    assert P.fallback_reason(P.create_session(ENCODER.read_bytes(), [P.CPU])) is None


@pytest.mark.skipif(not ENCODER.is_file(), reason="no shipped model")
def test_a_cpu_session_does_not_keep_the_graph_bytes_alive():
    import sys

    import numpy as np

    model = ENCODER.read_bytes()
    before = sys.getrefcount(model)
    session = P.create_session(model, [P.CPU], threads=1, label="encoder")
    assert sys.getrefcount(model) == before  # onnxruntime would hold them for the session's life
    pixels = np.zeros([1 if isinstance(d, str) else d for d in session.get_inputs()[0].shape], np.float32)
    assert session.run(None, {session.get_inputs()[0].name: pixels})[0].size > 0


def test_a_model_onnxruntime_cannot_load_is_an_error_after_trying_each_provider(caplog):
    with pytest.raises(P.ProviderError, match="could not load the decoder"):
        P.create_session(b"not a model", ["CUDAExecutionProvider", P.CPU], label="decoder")
    assert any("CUDAExecutionProvider failed" in r.message for r in caplog.records)


def test_threads_leave_a_core_free_on_bigger_boards(monkeypatch):
    for cores, threads in ((1, 1), (2, 1), (4, 3), (6, 4), (16, 4)):
        monkeypatch.setattr(P.os, "cpu_count", lambda c=cores: c)
        assert P.default_threads() == threads


@pytest.mark.skipif(not ENCODER.is_file(), reason="no shipped model")
def test_narration_says_once_that_the_accelerator_was_not_used(monkeypatch, tmp_path, photos):
    import json

    import onnxruntime as ort

    import edgecap.core.model
    from edgecap.audio.speech import SpeechWorker
    from edgecap.audio.voices import TextVoice
    from edgecap.core.decoding import preset
    from edgecap.narration.frames import MemorySource
    from edgecap.narration.narrate import EventLog, NarrateOptions, Narrator

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime really has CUDA")
    monkeypatch.setattr(edgecap.core.model, "resolve_providers", lambda requested: ["CUDAExecutionProvider", P.CPU])
    captioner = edgecap.core.model.OnnxCaptioner.load(REPO / "models" / "edgecap-base")
    assert captioner.provider == P.CPU and "CUDAExecutionProvider" in P.captioner_fallback(captioner)
    log = EventLog(tmp_path / "log.jsonl")
    speech = SpeechWorker(TextVoice(), replace_pending=False)
    frames = [photos[0]] * 12 + [photos[2]] * 12
    Narrator(MemorySource(frames, fps=5), captioner, preset("brief", beam_size=1, rerank=False), speech, log,
             options=NarrateOptions(duration=None)).run()
    speech.close()
    log.close()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["cue"] for r in records if r["kind"] == "cue"] == ["ready", "cpu"]
    faults = [r for r in records if r["kind"] == "fault"]
    assert len(faults) == 1 and faults[0]["source"] == "model" and "CUDAExecutionProvider" in faults[0]["text"]
    assert sum(r["kind"] == "caption" for r in records) == 2


def test_work_started_in_the_background_gives_its_result_or_raises_its_error_when_waited_for(monkeypatch):
    import threading

    for serial in ("0", "1"):
        monkeypatch.setenv("EDGECAP_SERIAL_LOAD", serial)
        where = []
        done = P.in_background(lambda: where.append(threading.current_thread()) or 42)
        assert done() == 42 and done() == 42
        assert (where[0] is threading.main_thread()) == (serial == "1")

        def broken():
            raise P.ProviderError("onnxruntime could not load the decoder: bad graph")

        wait = P.in_background(broken)
        with pytest.raises(P.ProviderError, match="could not load the decoder"):
            wait()
