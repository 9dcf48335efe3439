"""The fast paths of issue #13 keep the words: batch invariance, exact graph surgery, int8 head parity,
stored memory statistics, and `edgecap bench` itself (numbers live in the benchmark, not here)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ASSETS, REPO, SHARED_DATA

onnx = pytest.importorskip("onnx")


def twenty_four_photos():
    """24 real photos: val photos of ../shared/data when present, else crops and flips of assets/."""
    from edgecap.core.image import read_image

    captions = SHARED_DATA / "captioned" / "captions.jsonl"
    if captions.exists():
        rows = [json.loads(line) for line in captions.open()]
        return [read_image(SHARED_DATA / "captioned" / r["file"]) for r in rows if r["split"] == "val"][:24]
    photos = []
    for path in sorted(ASSETS.glob("*.jpg")):
        image = read_image(path)
        h, w = image.shape[:2]
        for view in (image, image[:, ::-1], image[h // 8:, w // 8:], image[:h * 7 // 8, :w * 7 // 8],
                     image[h // 10:h * 9 // 10, ::-1], image[::-1, :][::-1, w // 6:]):
            photos.append(np.ascontiguousarray(view))
    return photos[:24]


@pytest.fixture(scope="module")
def shipped():
    from edgecap.core.model import OnnxCaptioner

    return OnnxCaptioner.load(threads=1)


def test_same_photo_same_words_alone_or_in_any_batch(shipped):
    from edgecap.core.decoding import preset

    photos = twenty_four_photos()
    assert len(photos) == 24
    options = preset("brief")  # the shipped default: beam, greedy and sampled candidates, reranked
    shipped._features.clear()
    alone = [shipped.caption([p], options)[0].caption for p in photos]
    shipped._features.clear()
    batched = [r.caption for r in shipped.caption(photos, options)]
    order = np.random.default_rng(7).permutation(len(photos))
    shipped._features.clear()
    shuffled = [r.caption for r in shipped.caption([photos[i] for i in order], options)]
    unshuffled = [None] * len(photos)
    for position, i in enumerate(order):
        unshuffled[i] = shuffled[position]
    assert batched == alone
    assert unshuffled == alone
    # the same photo three times in one call, at different positions
    triple = shipped.caption([photos[0], photos[1], photos[0], photos[2], photos[0]], options)
    assert triple[0].caption == triple[2].caption == triple[4].caption == alone[0]


def test_per_layer_split_is_exact(tiny, tmp_path):
    import onnxruntime as ort

    from export.onnx_export import export_captioner
    from export.optimize import BROADCAST_KEY, split_layers

    stacked = export_captioner(tiny[0], tmp_path)["decoder"]
    model = onnx.load(str(stacked))
    assert split_layers(model)
    assert {p.key: p.value for p in model.metadata_props}.get(BROADCAST_KEY) == "1"
    old = ort.InferenceSession(str(stacked), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in old.get_inputs()}
    layers, rows, past = shapes["past_k"][0], 3, 4
    rng = np.random.default_rng(0)

    def random(name, batch, length=None):
        dims = [layers, batch] + [d if isinstance(d, int) else length for d in shapes[name][2:]]
        return rng.standard_normal(dims).astype(np.float32)
    visual = {n: random(n, 1) for n in ("cross_k", "cross_v")}
    feed = {"input_ids": rng.integers(4, 20, size=(rows, 1)).astype(np.int64),
            "past_k": random("past_k", rows, past), "past_v": random("past_v", rows, past),
            "visual_gain": rng.uniform(1, 1.5, size=(layers, rows, shapes["visual_gain"][2])).astype(np.float32),
            **{n: np.repeat(v, rows, axis=1) for n, v in visual.items()}}
    layered = {"input_ids": feed["input_ids"]}
    for name in ("past_k", "past_v", "visual_gain"):
        layered.update({f"{name}_{i}": feed[name][i] for i in range(layers)})
    for name, value in visual.items():  # one image's visual keys/values broadcast over its rows
        layered.update({f"{name}_{i}": value[i] for i in range(layers)})
    before = dict(zip([o.name for o in old.get_outputs()], old.run(None, feed)))
    after = dict(zip([o.name for o in new.get_outputs()], new.run(None, layered)))
    assert np.array_equal(before["logits"], after["logits"])
    for name in ("present_k", "present_v", "visual_attention"):
        assert np.array_equal(before[name], np.stack([after[f"{name}_{i}"] for i in range(layers)]))


def test_shipped_decoder_never_dequantizes_a_weight_per_step_and_keeps_its_captions(shipped, tmp_path):
    """The int8 head against the graph it replaced (DequantizeLinear -> Transpose -> MatMul, rebuilt here)."""
    from onnx import helper

    from edgecap.core.decoding import DecodingOptions
    from edgecap.core.model import OnnxCaptioner, OnnxDecoder
    from edgecap.core.providers import create_session

    model = onnx.load_from_string(shipped.bundle.read_verified("decoder"))
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "MatMul":
            assert all(producers.get(i) is None or producers[i].op_type not in ("DequantizeLinear", "Transpose")
                       for i in node.input), node.name
    head = [n for n in model.graph.node if n.name.startswith("logits_int8")]
    assert [n.op_type for n in head] == ["DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul", "Mul"]
    gather = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids")
    embedding = gather.input[0]  # the tied int8 table; its scale and zero point are the gathered rows'
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == gather.output[0])
    scale, zero = dq.input[1], dq.input[2]
    x = head[0].input[0]
    for n in head:
        model.graph.node.remove(n)
    model.graph.node.extend([
        helper.make_node("DequantizeLinear", [embedding, scale, zero], ["head_fp32"]),
        helper.make_node("Transpose", ["head_fp32"], ["head_fp32_t"]),
        helper.make_node("MatMul", [x, "head_fp32_t"], ["logits"])])
    reference = OnnxCaptioner.load(threads=1)
    reference.decoder = OnnxDecoder(create_session(model.SerializeToString(), reference.providers, 1, "decoder"),
                                    reference.arch.n_layers)
    photos = twenty_four_photos()
    options = DecodingOptions(beam_size=1, rerank=False)
    ours = [r.tokens for r in shipped.caption(photos, options)]
    theirs = [r.tokens for r in reference.caption(photos, options)]
    from export.quantize import token_agreement

    assert token_agreement(theirs, ours) >= 0.9  # measured 0.97 on 48 val photos
    assert sum(a == b for a, b in zip(ours, theirs)) >= 0.75 * len(ours)


def test_memory_statistics_are_stored_and_equal_a_rebuild(shipped):
    import io

    from edgecap.metrics.cider import CiderD

    with np.load(io.BytesIO(shipped.bundle.read_verified("memory"))) as z:
        assert "df_ngrams" in z and int(z["df_docs"]) == len(shipped.memory.captions)
    rebuilt = CiderD([[c] for c in shipped.memory.captions])
    assert shipped.memory.cider.df == rebuilt.df
    candidates = shipped.memory.captions[:6]
    assert [shipped.memory.cider.score(c, 7) for c in candidates] == [rebuilt.score(c, 7) for c in candidates]


def test_bench_reports_stages_floors_and_targets(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "edgecap", "bench", str(ASSETS / "chelsea.jpg"), "--runs", "1",
                           "--warmup", "0", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    for key in ("total_ms", "decoder_step_ms", "decoder_step_floor_ms", "encoder_floor_ms", "cold_start_s",
                "cold_start_cpu_s", "cold_start_first_run_s", "peak_rss_mb", "cpu_per_wall", "bundle_mb"):
        assert isinstance(report[key], (int, float)) and report[key] > 0, key
    # a ratio of two timed runs minus 1: below 0 when SPARC's run happened to be the faster one
    assert isinstance(report["sparc_overhead"], float) and report["sparc_overhead"] > -1
    assert set(report["captions_per_s"]) == {"1", "4", "8"}
    assert {"read", "preprocess", "encoder", "decode", "rerank", "total"} <= set(report["stages"])
    assert "decoder_step_floor_ms" in done.stdout or "floor" in done.stdout
