"""Bundles that cannot be swapped: manifest digest and pin, strict schema, size limits, external data."""
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgecap.core.bundle as bundle_module
from edgecap.core.bundle import MANIFEST_DIGEST, BundleError, load_bundle, write_manifest
from edgecap.core.image import read_image

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "edgecap-base"
pytestmark = pytest.mark.skipif(not (SHIPPED / "manifest.json").is_file(), reason="models/edgecap-base not built")


@pytest.fixture()
def user_bundle(tmp_path):
    dst = tmp_path / "mine"
    shutil.copytree(SHIPPED, dst)
    return dst


def rewrite(root: Path, mutate) -> None:
    """Edit manifest.json the way a careful attacker would: bundle.sha256 updated to match."""
    manifest = json.loads((root / "manifest.json").read_text())
    replaced = mutate(manifest)
    manifest = replaced if isinstance(replaced, list) else manifest  # a mutation may swap the whole manifest
    raw = json.dumps(manifest).encode()
    (root / "manifest.json").write_bytes(raw)
    (root / MANIFEST_DIGEST).write_text(f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n")


def one_line_refusal(root: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_shipped_bundle_is_pinned_and_any_edit_to_its_manifest_is_refused(tmp_path, monkeypatch):
    assert load_bundle(SHIPPED).shipped
    models = tmp_path / "models"
    shipped = models / "edgecap-base"
    shutil.copytree(SHIPPED, shipped)
    monkeypatch.setattr(bundle_module, "SHIPPED_MODELS", models.resolve())
    assert load_bundle(shipped).shipped
    # An edit with bundle.sha256 left alone, then one with it recomputed: both refused.
    manifest = json.loads((shipped / "manifest.json").read_text())
    manifest["calibration"]["alpha"] = 3.0
    (shipped / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    assert "does not match bundle.sha256" in one_line_refusal(shipped)
    rewrite(shipped, lambda m: m["calibration"].update(alpha=3.0))
    assert "is not the one this edgecap ships" in one_line_refusal(shipped)


def test_a_user_bundle_carries_its_digest_and_refuses_files_left_out_of_its_manifest(user_bundle):
    bundle = load_bundle(user_bundle)
    assert not bundle.shipped
    assert bundle.digest == hashlib.sha256((user_bundle / "manifest.json").read_bytes()).hexdigest()

    def drop_memory(m):
        del m["files"]["memory"]
        del m["sha256"]["memory.npz"]
    rewrite(user_bundle, drop_memory)  # the silent downgrade of the probe
    assert "memory.npz is in the bundle folder but not in its manifest" in one_line_refusal(user_bundle)
    shutil.copyfile(SHIPPED / "manifest.json", user_bundle / "manifest.json")
    (user_bundle / MANIFEST_DIGEST).unlink()
    assert "bundle.sha256 is missing" in one_line_refusal(user_bundle)


def nest(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("mutate, expected", [
    (lambda m: m.pop("sha256"), "sha256: missing"),
    (lambda m: m.update(sha256=list(m["sha256"])), "sha256: must be an object"),
    (lambda m: m["sha256"].update({"encoder.onnx": 7}), "must be 64 lower-case hex digits"),
    (lambda m: m.update(format_version="1"), "format_version: must be a positive integer"),
    (lambda m: [m], "must be a JSON object, got list"),
    (lambda m: m.update(provenance=nest(5000)), "nested"),
    (lambda m: m["preprocessing"].update(image_size=[0, 0]), "preprocessing.image_size"),
    (lambda m: m["preprocessing"].update(image_size=[12000, 12000]), "preprocessing.image_size"),
    (lambda m: m["preprocessing"].update(std=[0, 1, 1]), "preprocessing.std"),
    (lambda m: m["preprocessing"].update(mean=[float("nan"), 1, 1]), "preprocessing.mean"),
    (lambda m: m["tokens"].update(bos_id=99999), "tokens.bos_id"),
    (lambda m: m["tokens"].update(prompt_ids="1"), "tokens.prompt_ids"),
    (lambda m: m["architecture"].update(n_layers=True), "architecture.n_layers"),
    (lambda m: m["calibration"].update(beta=1.5), "calibration.beta"),
    (lambda m: m["memory"].update(neighbours=-3), "memory.neighbours"),
    (lambda m: m["files"].update(encoder=["encoder.onnx"]), "files.encoder"),
])
def test_malformed_manifests_are_one_line_errors(user_bundle, mutate, expected):
    if expected == "nested":  # json.dumps itself cannot write 5000 levels: write the text by hand
        manifest = (user_bundle / "manifest.json").read_text().rstrip().rstrip("}")
        raw = (manifest + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}").encode()
        (user_bundle / "manifest.json").write_bytes(raw)
        (user_bundle / MANIFEST_DIGEST).write_text(f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n")
    else:
        rewrite(user_bundle, mutate)
    assert expected in one_line_refusal(user_bundle)


def test_members_are_size_checked_before_hashing(user_bundle):
    with open(user_bundle / "tokenizer.json", "r+b") as f:
        f.truncate(3 << 30)  # 3 GiB, sparse: refused from its size, never read
    with pytest.raises(BundleError, match="tokenizer.json is 3072 MB, more than the 16 MB limit"):
        load_bundle(user_bundle).read_verified("tokenizer")


def test_a_memory_that_unpacks_to_gigabytes_or_holds_nans_is_refused(user_bundle):
    from edgecap.core.model import OnnxCaptioner

    bomb = user_bundle / "memory.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("keys.npy", "w", force_zip64=True) as f:
        zeros = bytes(1 << 20)
        for _ in range(300):
            f.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    write_manifest(user_bundle, json.loads((user_bundle / "manifest.json").read_text()))
    with pytest.raises(BundleError, match="memory.npz unpacks to 300 MB, more than the 256 MB limit"):
        OnnxCaptioner.load(user_bundle, provider="cpu")
    shutil.copyfile(SHIPPED / "memory.npz", bomb)
    with np.load(bomb) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mean"][0] = np.nan
    np.savez_compressed(bomb, **arrays)
    write_manifest(user_bundle, json.loads((user_bundle / "manifest.json").read_text()))
    with pytest.raises(BundleError, match="NaN"):
        OnnxCaptioner.load(user_bundle, provider="cpu")


def test_tokenizers_that_do_not_fit_the_model_are_refused(user_bundle):
    tokenizer = json.loads((SHIPPED / "tokenizer.json").read_text())
    (user_bundle / "tokenizer.json").write_text('{"model": 12}')
    write_manifest(user_bundle, json.loads((user_bundle / "manifest.json").read_text()))
    with pytest.raises(BundleError, match="tokenizer.json is not a valid tokenizer"):
        load_bundle(user_bundle).read_verified("tokenizer")
    vocab = tokenizer["model"]["vocab"]
    tokenizer["model"]["vocab"] = dict(list(vocab.items())[:1000])
    (user_bundle / "tokenizer.json").write_text(json.dumps(tokenizer))
    write_manifest(user_bundle, json.loads((user_bundle / "manifest.json").read_text()))
    with pytest.raises(BundleError, match="tokenizer.json has 1000 tokens, the model 2851"):
        load_bundle(user_bundle).read_verified("tokenizer")


def test_external_weights_come_from_the_bundle_only(user_bundle, tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from edgecap.core.decoding import preset
    from edgecap.core.model import OnnxCaptioner

    photo = read_image(REPO / "assets" / "coffee.jpg")
    expected = OnnxCaptioner.load(SHIPPED, provider="cpu").caption([photo], preset("brief"))[0].caption
    onnx.save_model(onnx.load(str(SHIPPED / "encoder.onnx")), str(user_bundle / "encoder.onnx"),
                    save_as_external_data=True,
                    all_tensors_to_one_file=True, location="encoder.data", size_threshold=256)
    assert (user_bundle / "encoder.data").stat().st_size > 1 << 20
    write_manifest(user_bundle, json.loads((user_bundle / "manifest.json").read_text()))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "encoder.data").write_bytes(bytes((user_bundle / "encoder.data").stat().st_size))  # planted zeros
    monkeypatch.chdir(elsewhere)
    captioner = OnnxCaptioner.load(user_bundle, provider="cpu")
    assert captioner.caption([photo], preset("brief"))[0].caption == expected

    data = bytearray((user_bundle / "encoder.data").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (user_bundle / "encoder.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="encoder.data does not match its sha256"):
        OnnxCaptioner.load(user_bundle, provider="cpu")

    # onnx will not write a location with "..": patch one of the same length into the bytes.
    graph = (user_bundle / "encoder.onnx").read_bytes()
    (user_bundle / "encoder.onnx").write_bytes(graph.replace(b"encoder.data", b"../encod.dat"))
    write_manifest(user_bundle, json.loads((user_bundle / "manifest.json").read_text()))
    with pytest.raises(BundleError, match="external data '../encod.dat', which is not a hashed file"):
        OnnxCaptioner.load(user_bundle, provider="cpu")


def test_a_weight_marked_external_without_a_location_is_refused_by_onnxruntime():
    # external_locations skips its walk when no "location" is in the bytes; this is why that is safe.
    onnx = pytest.importorskip("onnx")
    import numpy as np

    from edgecap.core.onnx_external import external_locations
    from edgecap.core.providers import CPU, ProviderError, create_session

    h = onnx.helper
    weight = onnx.numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])], [weight])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()
    assert b"location" not in model and external_locations(model) == set()
    with pytest.raises(ProviderError, match="location"):
        create_session(model, [CPU], label="encoder")
