"""The committed tiny test bundle (tests/data/edgecap-tiny) loads without torch and is what
tests/make_tiny_bundle.py makes today, so it cannot drift from the export."""
import json

import numpy as np
import pytest
from make_tiny_bundle import MAX_BYTES, bundle_bytes

from edgecap.core.bundle import load_bundle
from edgecap.core.decoding import DecodingOptions, preset
from edgecap.core.memory import MEMORY_FILE

FIX = "run `python tests/make_tiny_bundle.py` and commit tests/data/edgecap-tiny"


def test_committed_bundle_verifies_and_captions_with_its_memory(tiny_bundle, tiny_captioner, photos):
    bundle = load_bundle(tiny_bundle)  # every member against its sha256, the manifest against bundle.sha256
    assert bundle_bytes(tiny_bundle) < MAX_BYTES
    assert bundle.manifest["architecture"]["calibrated_attention_nodes"] == 2  # SPARC in the graph
    assert bundle.calibration.alpha > 1.0
    assert tiny_captioner.memory is not None and len(tiny_captioner.memory.captions) == len(photos)
    reranked = tiny_captioner.caption(photos, preset("brief"))
    assert all(r.caption for r in reranked)


def _outputs(captioner, photos):
    features = captioner.encode(photos)
    plain = DecodingOptions(beam_size=1, max_length=16, rerank=False)
    greedy = [r.caption for r in captioner.caption_features(features, plain)]
    reranked = [r.caption for r in captioner.caption_features(features, preset("brief"))]
    return features, greedy + reranked


def test_committed_bundle_is_what_the_script_makes(tiny_bundle, tiny_captioner, photos, tmp_path):
    pytest.importorskip("torch")
    from make_tiny_bundle import make_tiny_bundle

    from edgecap.core.model import OnnxCaptioner

    fresh = make_tiny_bundle(tmp_path / "edgecap-tiny")
    committed_manifest, fresh_manifest = (json.loads((p / "manifest.json").read_text()) for p in (tiny_bundle, fresh))
    committed_digests, fresh_digests = committed_manifest.pop("sha256"), fresh_manifest.pop("sha256")
    assert committed_manifest == fresh_manifest, FIX
    assert set(committed_digests) == set(fresh_digests), FIX
    assert committed_digests["tokenizer.json"] == fresh_digests["tokenizer.json"], FIX

    # The graphs (equal bytes with the pinned torch; compared by what they compute, so that an
    # exporter that orders the same graph differently does not count) and the memory (an npz
    # carries its write time, so compared array by array).
    made = OnnxCaptioner.load(fresh, provider="cpu")
    (want, want_text), (got, got_text) = _outputs(tiny_captioner, photos), _outputs(made, photos)
    for name in ("pooled", "cross_k", "cross_v"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=1e-5, err_msg=FIX)
    assert got_text == want_text, FIX
    committed_memory, made_memory = _memory(tiny_bundle), _memory(fresh)
    assert committed_memory.keys() == made_memory.keys(), FIX
    for key, value in committed_memory.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            np.testing.assert_allclose(made_memory[key], value, atol=2e-3, err_msg=FIX)
        else:
            assert made_memory[key] == value, (key, FIX)


def _memory(bundle) -> dict:
    """memory.npz as arrays, captions as a list and the n-gram document frequencies as a dict
    (stored in set order, which changes with Python's string hashing)."""
    with np.load(bundle / MEMORY_FILE) as npz:
        memory = {key: npz[key] for key in npz.files}
    memory["df"] = dict(zip(memory.pop("df_ngrams").tolist(), memory.pop("df_counts").tolist()))
    memory["captions"] = memory["captions"].tolist()
    memory["df_docs"] = int(memory["df_docs"])
    return memory
