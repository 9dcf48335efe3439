"""The caption memory: neighbours, the CIDEr-D choice, storage in a bundle, reranking in the captioner."""
import shutil
from dataclasses import replace

import numpy as np
import pytest

from edgecap.core.bundle import BundleError
from edgecap.core.decoding import preset
from edgecap.core.memory import MEMORY_FILE, CaptionMemory, MemorySettings
from edgecap.evaluation.dataset_eval import parse_variant

DOG, CAT = "a dog runs on the grass", "a cat sits on a sofa"


def two_scenes(seed: int = 0):
    rng = np.random.default_rng(seed)
    centre = np.zeros((2, 32))
    centre[0, 0] = centre[1, 1] = 5.0
    pooled = np.vstack([centre[0] + rng.normal(0, 0.3, (12, 32)), centre[1] + rng.normal(0, 0.3, (12, 32))])
    return pooled, [DOG] * 12 + [CAT] * 12, centre


def test_choice_follows_what_similar_photos_were_called():
    pooled, captions, centre = two_scenes()
    memory = CaptionMemory.fit(pooled, captions, dims=8, settings=MemorySettings(neighbours=5))
    candidates = ["a cat sits on the grass", DOG, CAT]
    near_dog, near_cat = memory.nearest(centre + 0.1)
    assert set(near_dog) <= set(range(12)) and set(near_cat) <= set(range(12, 24))
    assert candidates[memory.choose(candidates, near_dog)] == DOG
    assert candidates[memory.choose(candidates, near_cat)] == CAT


def test_memory_round_trips_and_rejects_garbage():
    pooled, captions, centre = two_scenes()
    memory = CaptionMemory.fit(pooled, captions, dims=8)
    again = CaptionMemory.from_bytes(memory.to_bytes(), memory.settings)
    assert again.captions == captions
    np.testing.assert_allclose(again.keys, memory.keys, atol=1e-3)  # stored as fp16
    np.testing.assert_array_equal(again.nearest(centre)[:, :3], memory.nearest(centre)[:, :3])
    with pytest.raises(ValueError, match="memory"):
        CaptionMemory.from_bytes(b"not an npz file")


def test_stored_memory_keeps_its_statistics_and_loads_the_floats_unpacked():
    import io
    import zipfile

    pooled, captions, centre = two_scenes()
    memory = CaptionMemory.fit(pooled, captions, dims=8)
    data = memory.to_bytes()
    assert data == memory.to_bytes()  # the same bytes at every export: a re-export changes no hash
    packing = {i.filename: i.compress_type for i in zipfile.ZipFile(io.BytesIO(data)).infolist()}
    assert packing["keys.npy"] == packing["basis.npy"] == zipfile.ZIP_STORED
    assert packing["captions.npy"] == packing["df_ngrams.npy"] == zipfile.ZIP_DEFLATED
    again = CaptionMemory.from_bytes(data)
    assert dict(again.cider.df) == dict(memory.cider.df) and len(again.cider.df) == len(memory.cider.df)
    assert again.cider.df.get(("a", "dog")) == memory.cider.df[("a", "dog")] == 12
    assert again.cider.df.get(("a", "horse")) is None
    assert [again.cider.score(c, 3) for c in (DOG, CAT)] == [memory.cider.score(c, 3) for c in (DOG, CAT)]


@pytest.fixture
def bundle_with_memory(tiny_bundle, tmp_path):
    shutil.copytree(tiny_bundle, tmp_path / "bundle")
    return tmp_path / "bundle"


def test_reranking_picks_the_candidate_the_memory_supports(bundle_with_memory, tiny_captioner, photos):
    # A memory that holds each photo's greedy caption, one neighbour: the photo itself. The
    # reranked caption must then be the greedy one, where beam search says something else.
    from edgecap.core.model import OnnxCaptioner
    from export.memory import write_memory

    brief = preset("brief", rerank=False)
    beam = [r.caption for r in tiny_captioner.caption(photos, brief)]
    greedy = [r.caption for r in tiny_captioner.caption(photos, replace(brief, beam_size=1))]
    assert beam != greedy  # otherwise this test could not tell reranking from no reranking
    pooled = tiny_captioner.encode(photos).pooled
    write_memory(bundle_with_memory, CaptionMemory.fit(pooled, greedy, settings=MemorySettings(neighbours=1)))

    captioner = OnnxCaptioner.load(bundle_with_memory, provider="cpu")
    assert captioner.bundle.manifest["memory"]["photos"] == len(photos)
    assert [r.caption for r in captioner.caption(photos, preset("brief"))] == greedy
    assert [r.caption for r in captioner.caption(photos, brief)] == beam
    detailed = [r.caption for r in captioner.caption(photos, preset("detailed"))]  # detailed never reranks
    assert detailed == [r.caption for r in tiny_captioner.caption(photos, preset("detailed"))]


def test_add_memory_from_photos_and_tampering(bundle_with_memory, photo_paths):
    from edgecap.core.model import OnnxCaptioner
    from export.memory import add_memory

    (bundle_with_memory / "eval").mkdir()
    (bundle_with_memory / "eval" / "metrics.json").write_text("{}")
    memory = add_memory(bundle_with_memory, photo_paths, dims=16)
    assert len(memory.captions) == len(photo_paths) and memory.basis.shape[1] == len(photo_paths) - 1
    (bundle_with_memory / "eval" / "metrics.json").write_text('{"cider": 1}')  # reports are not model files
    assert OnnxCaptioner.load(bundle_with_memory, provider="cpu").memory is not None
    path = bundle_with_memory / MEMORY_FILE
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleError, match="memory.npz does not match"):
        OnnxCaptioner.load(bundle_with_memory, provider="cpu")


def test_eval_variant_flags():
    assert parse_variant("a=m").rerank and parse_variant("a=m").calibrate
    v = parse_variant("a=m:off,norerank")
    assert not v.calibrate and not v.rerank
    with pytest.raises(ValueError):
        parse_variant("a=m:sometimes")
