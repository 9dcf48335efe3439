import json
import shutil

import pytest

from edgecap.core.bundle import BundleError, load_bundle
from edgecap.core.model import OnnxCaptioner


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_verified_bundle_loads(bundle_copy):
    bundle = load_bundle(bundle_copy)
    assert bundle.architecture.n_layers == 2
    assert set(bundle.manifest["sha256"]) == {"encoder.onnx", "decoder.onnx", "tokenizer.json", "memory.npz"}
    assert bundle.manifest["provenance"]["weights"].startswith("random")


def test_tampered_model_file_is_refused(bundle_copy):
    path = bundle_copy / "decoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decoder.onnx does not match its sha256"):
        OnnxCaptioner.load(bundle_copy, provider="cpu")


def test_tampered_tokenizer_is_refused(bundle_copy):
    (bundle_copy / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match="tokenizer.json does not match"):
        OnnxCaptioner.load(bundle_copy, provider="cpu")


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match="encoder.onnx is missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("bad_path", ["../outside.onnx", "/etc/passwd"])
def test_paths_leaving_the_bundle_are_refused(bundle_copy, bad_path):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["encoder"] = bad_path
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="leaves the bundle"):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)
