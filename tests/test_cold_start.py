"""Loading the bundle on two threads: the same captions as loading it in turn, detectors built once."""
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
