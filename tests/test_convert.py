"""`python -m export convert` on tiny random BLIP, ViT-GPT2 and GIT checkpoints built here (no downloads).

Parity chain: transformers forward == torch step module (eager) == ONNX decoder;
transformers generate() == edgecap runtime greedy with SPARC off; torch sparc_generate
== runtime greedy with SPARC on; int8 keeps >= 90% of the fp32 bundle's tokens.

The checkpoints are randomly initialised from configs, then fitted for a moment to
one caption per test photo (see `fit_captions`).
"""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edgecap.core.decoding import DecodingOptions  # noqa: E402
from edgecap.core.image import normalize, resize_for_model  # noqa: E402
from export.tiny import TINY_TEXT  # noqa: E402

ARCHS = ["blip", "vision-encoder-decoder", "git"]
MAX_NEW = 16
CALIBRATION = "alpha=1.5,tau=0.5"
IMAGE = dict(image_size=32, patch_size=8)  # 16 patches + CLS = 17 visual tokens
WIDTH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
ASSETS = Path(__file__).resolve().parents[1] / "assets"
FIT_CAPTIONS = {  # words from TINY_TEXT, so every tokenizer here has them
    "chelsea": "a black and white cat sits on a sofa",
    "coffee": "a woman holds a cup of coffee at a wooden table",
    "astronaut": "a woman in a red shirt sits near a table",
    "rocket": "a rocket launches into a blue sky with smoke",
}
FIT_STEPS, FIT_LR = 100, 4e-3


def greedy(calibrate):
    return DecodingOptions(beam_size=1, min_length=0, max_length=MAX_NEW, calibrate=calibrate)


# --- tiny checkpoints ---------------------------------------------------------------
def words():
    return sorted(set(TINY_TEXT.split()))


def bert_tokenizer():
    vocab = {token: i for i, token in enumerate(BERT_SPECIALS + words())}
    return transformers.BertTokenizerFast(vocab=vocab)


def gpt2_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TINY_TEXT.splitlines(), trainers.BpeTrainer(vocab_size=160,
                                                                        special_tokens=["<|endoftext|>"]))
    return transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                          eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def scale_weights(model, seed):
    """Random init is too flat for captions to vary; widen it like export/tiny.py does."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)


def fit_captions(arch, model, tokenizer, processor, prompt, eos):
    """A few Adam steps of teacher forcing towards FIT_CAPTIONS on the test photos.

    A randomly initialised captioner's next-token logits are near-ties at most steps,
    so int8 rounding (or any other noise) flips an early token and the rest of the
    caption with it: free-running agreement then measures chaos, not quantization.
    After ~1 s of fitting the model is peaked and ends its captions as a trained one
    does; the captions still differ per photo and SPARC still changes some.
    """
    from edgecap.core.image import read_image

    pixels = processor(images=[read_image(ASSETS / f"{name}.jpg") for name in FIT_CAPTIONS],
                       return_tensors="pt").pixel_values
    rows = [list(prompt) + tokenizer.encode(text, add_special_tokens=False) + [eos]
            for text in FIT_CAPTIONS.values()]
    width = max(map(len, rows))
    input_ids = torch.tensor([row + [eos] * (width - len(row)) for row in rows])
    weight = torch.tensor([[1.0] * (len(row) - 1) + [0.0] * (width - len(row)) for row in rows])
    optimizer = torch.optim.Adam(model.parameters(), lr=FIT_LR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and polite next to other jobs
    try:
        for _ in range(FIT_STEPS):
            logits = hf_logits(arch, model, pixels, input_ids)[:, :-1]
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
            optimizer.zero_grad()
            ((loss * weight).sum() / weight.sum()).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)


def build_checkpoint(arch, folder):
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    if arch == "blip":
        tokenizer = bert_tokenizer()
        ids = tokenizer.convert_tokens_to_ids
        text = dict(WIDTH, vocab_size=len(tokenizer), max_position_embeddings=32, bos_token_id=ids("[DEC]"),
                    sep_token_id=ids("[SEP]"), eos_token_id=ids("[SEP]"), pad_token_id=ids("[PAD]"))
        config = transformers.BlipConfig(text_config=text, vision_config=dict(WIDTH, **IMAGE))
        model = transformers.BlipForConditionalGeneration(config)
        processor = transformers.BlipImageProcessor(size={"height": 32, "width": 32})
        prompt, eos = [ids("[DEC]")], ids("[SEP]")
    elif arch == "vision-encoder-decoder":
        tokenizer = gpt2_tokenizer()
        eos = tokenizer.eos_token_id
        prompt = [eos]
        encoder = transformers.ViTConfig(**dict(WIDTH, hidden_size=24), **IMAGE)  # 24 -> 32: enc_to_dec_proj
        decoder = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                          add_cross_attention=True, is_decoder=True, bos_token_id=eos,
                                          eos_token_id=eos)
        config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
        config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = eos
        model = transformers.VisionEncoderDecoderModel(config=config)
        processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    else:
        tokenizer = bert_tokenizer()
        ids = tokenizer.convert_tokens_to_ids
        config = transformers.GitConfig(vision_config=dict(WIDTH, **IMAGE), vocab_size=len(tokenizer),
                                        max_position_embeddings=32, bos_token_id=ids("[CLS]"),
                                        eos_token_id=ids("[SEP]"), pad_token_id=ids("[PAD]"), **WIDTH)
        model = transformers.GitForCausalLM(config)
        processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        prompt, eos = [ids("[CLS]")], ids("[SEP]")
    scale_weights(model, seed=ARCHS.index(arch))
    fit_captions(arch, model.eval(), tokenizer, processor, prompt, eos)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def hf_logits(arch, model, pixels, input_ids):
    """Teacher-forced transformers logits (B, T, V) of the text positions."""
    if arch == "blip":
        image = model.vision_model(pixel_values=pixels).last_hidden_state
        return model.text_decoder(input_ids=input_ids, encoder_hidden_states=image).logits
    if arch == "vision-encoder-decoder":
        return model(pixel_values=pixels, decoder_input_ids=input_ids).logits
    return model(pixel_values=pixels, input_ids=input_ids).logits[:, -input_ids.shape[1]:]


@pytest.fixture(scope="module", params=ARCHS)
def converted(request, tmp_path_factory, photos):
    from edgecap.core.model import OnnxCaptioner
    from export.convert import convert, load_hf_checkpoint

    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    source = build_checkpoint(arch, root / "checkpoint")
    bundle = convert(source, root / "bundle", calibration=CALIBRATION)
    runtime = OnnxCaptioner.load(bundle, provider="cpu")
    prep = runtime.bundle.preprocessing
    pixels = torch.from_numpy(np.stack([normalize(resize_for_model(p, prep), prep) for p in photos]))
    return SimpleNamespace(arch=arch, source=source, bundle=bundle, runtime=runtime, pixels=pixels,
                           captioner=load_hf_checkpoint(source).captioner)


# --- parity ---------------------------------------------------------------------------
def test_step_module_matches_transformers_forward(converted):
    cap = converted.captioner
    input_ids = torch.randint(0, cap.vocab_size, (len(converted.pixels), 6))
    with torch.no_grad():
        expected = hf_logits(converted.arch, cap.model, converted.pixels, input_ids)
        cross_k, cross_v, _ = cap.encode(converted.pixels)
        ones = torch.ones(cap.n_layers, len(input_ids), cross_k.shape[3])
        past = (cap.empty_cache(len(input_ids)), cap.empty_cache(len(input_ids)))
        logits, *past, _ = cap.step(input_ids[:, :4], *past, cross_k, cross_v, ones)
        errors = [float((logits - expected[:, 3]).abs().max())]
        for t in (4, 5):
            logits, *past, _ = cap.step(input_ids[:, t:t + 1], *past, cross_k, cross_v, ones)
            errors.append(float((logits - expected[:, t]).abs().max()))
    assert max(errors) < 1e-4, errors


def test_onnx_decoder_matches_torch_step(converted):
    from edgecap.core.model import VisualFeatures

    cap, runtime = converted.captioner, converted.runtime
    rows = len(converted.pixels)
    cross_k, cross_v, pooled = runtime.encoder.run(["cross_k", "cross_v", "pooled"],
                                                   {"pixels": converted.pixels.numpy()})
    with torch.no_grad():
        ref_k, ref_v, ref_pooled = cap.encode(converted.pixels)
    np.testing.assert_allclose(cross_k, ref_k.numpy(), atol=1e-4)
    np.testing.assert_allclose(pooled, ref_pooled.numpy(), atol=1e-4)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cap.vocab_size, size=(rows, 5))
    gain = rng.uniform(1.0, 1.5, size=(cap.n_layers, rows, cross_k.shape[3])).astype(np.float32)
    dec = runtime.decoder
    cache, visual = dec.empty_cache(rows), dec.start(VisualFeatures(cross_k, cross_v, pooled), 1)
    past = (cap.empty_cache(rows), cap.empty_cache(rows))
    worst = 0.0
    for chunk in (ids[:, :3], ids[:, 3:4], ids[:, 4:5]):
        logits, cache, attention = dec.step(chunk, cache, visual, gain)
        with torch.no_grad():
            ref_logits, *past, ref_attention = cap.step(torch.from_numpy(chunk), *past, ref_k, ref_v,
                                                        torch.from_numpy(gain))
        worst = max(worst, float(np.abs(logits - ref_logits.numpy()).max()))
        np.testing.assert_allclose(attention, ref_attention.numpy(), atol=1e-5)
    assert worst < 1e-4, worst


def test_greedy_captions_equal_transformers_generate(converted, photos):
    expected = converted.captioner.hf_generate(converted.pixels, MAX_NEW)
    got = converted.runtime.caption(photos, greedy(calibrate=False))
    assert [r.tokens for r in got] == expected
    assert len({tuple(t) for t in expected}) > 1, "captions should differ between photos"


def test_sparc_captions_equal_torch_sparc_generate(converted, photos):
    from export.generate import sparc_generate

    cap, runtime = converted.captioner, converted.runtime
    tokens = runtime.bundle.tokens
    with torch.no_grad():
        cross_k, cross_v, _ = cap.encode(converted.pixels)
    expected = sparc_generate(cap.step, cross_k, cross_v, cap.empty_cache(len(photos)), prompt_ids=tokens.prompt_ids,
                              eos_id=tokens.eos_id, max_new_tokens=MAX_NEW, calibration=runtime.bundle.calibration)
    on = runtime.caption(photos, greedy(calibrate=True))
    off = runtime.caption(photos, greedy(calibrate=False))
    assert [r.tokens for r in on] == expected
    assert all(r.sparc_selected > 0 for r in on)
    assert any(a.tokens != b.tokens for a, b in zip(on, off)), "SPARC should change at least one caption"


def test_int8_bundle_keeps_most_tokens(converted, photo_paths, tmp_path):
    from edgecap.core.bundle import load_bundle
    from export.convert import quantize_converted

    int8_dir = quantize_converted(converted.bundle, tmp_path / "int8", photo_paths)
    manifest = load_bundle(int8_dir).manifest
    assert manifest["quantization"]["decoder"].startswith("int8")
    report = manifest["verification"]["int8_vs_fp32"]
    assert report["token_agreement"] >= 0.9
    if report["encoder"] == "fp32":  # the int8 encoder was measured, found lossy and not shipped
        assert manifest["quantization"]["encoder"] == "fp32"
        assert report["rejected"]["dynamic"]["token_agreement"] < 0.9
    else:
        assert manifest["quantization"]["encoder"].startswith("int8 dynamic")
    assert manifest["verification"]["fp32_vs_torch"]["max_abs_logit_error"] < 1e-4


# --- what the bundle carries --------------------------------------------------------------
def test_bundle_carries_tokenizer_preprocessing_and_contract(converted):
    from edgecap.core.bundle import load_bundle

    bundle = load_bundle(converted.bundle)
    processor = transformers.AutoImageProcessor.from_pretrained(converted.source)
    prep = bundle.preprocessing
    assert bundle.architecture.family == converted.arch
    assert bundle.manifest["architecture"]["calibrated_attention_nodes"] == converted.captioner.n_layers
    assert prep.image_size == (32, 32)
    assert prep.resize == ("center_crop" if converted.arch == "git" else "squash")
    np.testing.assert_allclose(prep.mean, processor.image_mean, rtol=1e-6)
    np.testing.assert_allclose(prep.std, processor.image_std, rtol=1e-6)
    assert prep.rescale == pytest.approx(1 / 255)
    assert bundle.tokens.suppress_ids == ()
    assert bundle.calibration.alpha == 1.5 and bundle.calibration.tau == 0.5
    verification = bundle.manifest["verification"]["fp32_vs_torch"]
    checks = ("transformers_generate", "sparc_off", "sparc_on")
    assert {c: verification[f"greedy_token_agreement_{c}"] for c in checks} == dict.fromkeys(checks, 1.0)

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(converted.source)
    ids = hf_tokenizer.encode("a dog runs on the grass", add_special_tokens=False)
    assert converted.runtime.tokenizer.encode("a dog runs on the grass") == ids


# --- errors -----------------------------------------------------------------------------
def run_cli(*args):
    from export.__main__ import main

    return main(["convert", *map(str, args)])


@pytest.fixture(scope="module")
def blip_checkpoint(tmp_path_factory):
    return build_checkpoint("blip", tmp_path_factory.mktemp("errors") / "blip")


@pytest.mark.parametrize("source, message", [
    ("{tmp}/absent", "does not exist"),
    ("Salesforce/blip-image-captioning-base", "local directory"),
])
def test_missing_directory_and_hub_id_fail_in_one_line(source, message, tmp_path, capsys):
    assert run_cli("--from", source.format(tmp=tmp_path), "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_fails_in_one_line(blip_checkpoint, tmp_path, capsys):
    assert run_cli("--from", blip_checkpoint, "--arch", "llava", "--out", tmp_path / "out") == 2
    assert "unsupported architecture 'llava'" in capsys.readouterr().err
    assert run_cli("--from", blip_checkpoint, "--arch", "git", "--out", tmp_path / "out") == 2
    assert "does not match" in capsys.readouterr().err
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert run_cli("--from", other, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'llama'" in err and "supported architectures" in err


def test_processor_saved_whole_by_transformers_5_is_accepted(blip_checkpoint, tmp_path, capsys):
    """transformers 5 saves a whole processor as processor_config.json (no preprocessor_config.json)."""
    from export.convert import load_hf_checkpoint

    whole = tmp_path / "whole-processor"
    shutil.copytree(blip_checkpoint, whole)
    (whole / "preprocessor_config.json").unlink()
    processor = transformers.BlipProcessor(
        image_processor=transformers.AutoImageProcessor.from_pretrained(blip_checkpoint),
        tokenizer=transformers.AutoTokenizer.from_pretrained(blip_checkpoint))
    processor.save_pretrained(whole)
    if (whole / "preprocessor_config.json").is_file():
        pytest.skip(f"transformers {transformers.__version__} still writes preprocessor_config.json")
    assert (whole / "processor_config.json").is_file()
    assert load_hf_checkpoint(whole).preprocessing == load_hf_checkpoint(blip_checkpoint).preprocessing
    (whole / "processor_config.json").unlink()
    assert run_cli("--from", whole, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no image processor" in err and str(whole) in err


def test_checkpoint_without_tokenizer_fails_in_one_line(blip_checkpoint, tmp_path, capsys):
    stripped = tmp_path / "no-tokenizer"
    shutil.copytree(blip_checkpoint, stripped)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (stripped / name).unlink(missing_ok=True)
    assert run_cli("--from", stripped, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no tokenizer" in err


def test_bad_calibration_override_fails_in_one_line(blip_checkpoint, tmp_path, capsys):
    assert run_cli("--from", blip_checkpoint, "--calibration", "gamma=2", "--out", tmp_path / "out") == 2
    assert "unknown calibration setting 'gamma'" in capsys.readouterr().err
