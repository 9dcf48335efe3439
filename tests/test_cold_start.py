"""Loading the bundle on several threads: the same captions as loading it in turn, detectors built once."""
from pathlib import Path

import pytest

from edgecap.caption import describer_for
from edgecap.core.decoding import preset
from edgecap.core.model import OnnxCaptioner
from edgecap.vision.perception import Perceiver

MODEL = Path(__file__).resolve().parents[1] / "models" / "edgecap-base"
pytestmark = pytest.mark.skipif(not (MODEL / "manifest.json").is_file(), reason="no shipped model")


def test_detectors_loaded_beside_the_captioner_speak_as_a_serial_load(monkeypatch, photos):
    built = []

    def counted(*args):
        built.append(args)
        return Perceiver.from_bundle(*args)

    monkeypatch.setenv("EDGECAP_SERIAL_LOAD", "0")  # threads even on two cores
    parallel = OnnxCaptioner.load(MODEL, provider="cpu", threads=1, perception=counted)
    monkeypatch.setenv("EDGECAP_SERIAL_LOAD", "1")
    serial = OnnxCaptioner.load(MODEL, provider="cpu", threads=1)
    first = describer_for(parallel)
    assert len(built) == 1 and first.perceiver is not None and describer_for(parallel) is first
    spoken = [first.describe([p], preset("brief"))[0] for p in photos]
    again = [describer_for(serial).describe([p], preset("brief"))[0] for p in photos]
    assert [(s.caption, s.tokens, s.objects, s.faces) for s in spoken] == \
           [(s.caption, s.tokens, s.objects, s.faces) for s in again]
    assert len(built) == 1  # the serial captioner built its own detectors when first asked


@pytest.mark.parametrize("first", ["numpy", "edgecap"])
def test_numpy_blas_runs_one_thread_whichever_loads_first(first):
    import subprocess
    import sys

    pytest.importorskip("threadpoolctl")
    code = (f"import {first}, numpy, edgecap\n"
            "from edgecap.core.providers import pin_blas_threads\n"
            "pin_blas_threads()\n"
            "from threadpoolctl import threadpool_info\n"
            "print(max(p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=MODEL.parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"


def test_loading_started_early_reports_a_missing_model_and_can_be_abandoned(tmp_path):
    from edgecap.core.bundle import BundleError
    from edgecap.core.early import start_loading

    with pytest.raises(BundleError, match="does not exist"):
        start_loading(tmp_path / "nothing")
    started = start_loading(MODEL, provider="cpu", threads=1)
    started.abandon()  # waits for the decoder's thread, whatever its outcome
    assert started.decoder().get_providers() == ["CPUExecutionProvider"]
