"""`edgecap bench --compare`: edgecap against what an ML engineer would otherwise run, same photos, one thread.

Run by edgecap/evaluation/bench_report.py in a child process (edgecap itself never imports torch):

    python bench/compare.py --model models/edgecap-base --json out.json photo.jpg ...

(a) PyTorch eager: export/model.py's Captioner with the bundle's recipe (the training
    checkpoint is not shipped, so random weights: the cost of a step does not depend on
    the values); (b) a plain onnxruntime loop over the bundle's own graphs (session.run
    with numpy feeds every step, no IO binding, no edgecap loop); (c) optimum's
    ORTModelForVision2Seq on a ViT-GPT2 VisionEncoderDecoder checkpoint built from
    configs (fp32 and dynamic int8), against edgecap's bundle of that same checkpoint
    from `python -m export convert` (fp32 and --int8). Every path decodes exactly
    TOKENS greedy tokens (end token suppressed), SPARC and reranking off, so they do the
    same work. A part whose packages are missing is reported as skipped, with why.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgecap.core.decoding import DecodingOptions  # noqa: E402
from edgecap.core.image import normalize, read_image  # noqa: E402
from edgecap.core.model import OnnxCaptioner  # noqa: E402

TOKENS = 15
ROUNDS = 3
FORCED = DecodingOptions(beam_size=1, min_length=TOKENS, max_length=TOKENS, calibrate=False, rerank=False)


def timed(fn, items, rounds=ROUNDS) -> tuple[list[float], list[float]]:
    """Wall and process CPU ms of fn on each item, `rounds` passes."""
    wall, cpu = [], []
    for _ in range(rounds):
        for item in items:
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(item)
            wall.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    return wall, cpu


def med(xs) -> float:
    return round(float(np.median(xs)), 3)


def both(prefix: str, times: tuple[list[float], list[float]]) -> dict:
    return {f"{prefix}_ms": med(times[0]), f"{prefix}_cpu_ms": med(times[1])}


def edgecap_forced(captioner: OnnxCaptioner, images) -> dict:
    captioner.caption([images[0]], FORCED)

    def run(image):
        captioner._features.clear()
        captioner.caption([image], FORCED)

    def encode(image):
        captioner._features.clear()
        captioner.encode([image])
    return {**both("caption", timed(run, images)), **both("encoder", timed(encode, images))}


def torch_eager(captioner: OnnxCaptioner, images) -> dict:
    import torch

    from export.generate import sparc_generate
    from export.model import Captioner as TorchCaptioner, CaptionerConfig

    torch.set_num_threads(1)
    model = TorchCaptioner(CaptionerConfig(**captioner.bundle.manifest["config"])).eval()
    tokens = captioner.bundle.tokens
    prep = captioner.bundle.preprocessing

    def pixels(image):
        return torch.from_numpy(normalize(captioner.preprocess(image), prep)[None])

    @torch.no_grad()
    def run(image):
        cross_k, cross_v = model.visual_cache(model.grid_tokens(pixels(image)))
        sparc_generate(model.step, cross_k, cross_v, model.empty_cache(1), prompt_ids=tokens.prompt_ids,
                       eos_id=tokens.eos_id, max_new_tokens=TOKENS - 1, calibration=None, min_new_tokens=TOKENS)

    @torch.no_grad()
    def encode(image):
        model.visual_cache(model.grid_tokens(pixels(image)))
    run(images[0])
    return {**both("caption", timed(run, images)), **both("encoder", timed(encode, images)),
            "weights": "random (the training checkpoint is not shipped); same architecture and sizes"}


def plain_onnxruntime(captioner: OnnxCaptioner, images) -> dict:
    """The bundle's graphs driven the obvious way: session.run with numpy feeds each step."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    enc = ort.InferenceSession(captioner.bundle.read_verified("encoder"), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(captioner.bundle.read_verified("decoder"), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in dec.get_inputs()]
    layered = "past_k_0" in names
    arch, tokens, prep = captioner.arch, captioner.bundle.tokens, captioner.bundle.preprocessing
    n = arch.n_layers

    def run(image):
        pixels = normalize(captioner.preprocess(image), prep)[None]
        cross_k, cross_v, _ = enc.run(["cross_k", "cross_v", "pooled"], {"pixels": pixels})
        past_k = past_v = np.zeros((n, 1, arch.n_heads, 0, arch.head_dim), np.float32)
        ids = np.asarray([tokens.prompt_ids], np.int64)
        gain = np.ones((n, 1, arch.n_visual), np.float32)
        for _ in range(TOKENS):
            feed = {"input_ids": ids}
            if layered:
                for layer in range(n):
                    feed.update({f"past_k_{layer}": past_k[layer], f"past_v_{layer}": past_v[layer],
                                 f"cross_k_{layer}": cross_k[layer], f"cross_v_{layer}": cross_v[layer],
                                 f"visual_gain_{layer}": gain[layer]})
                out = dec.run(None, feed)
                logits, past_k, past_v = out[0], np.stack(out[1:1 + n]), np.stack(out[1 + n:1 + 2 * n])
            else:
                feed.update(past_k=past_k, past_v=past_v, cross_k=cross_k, cross_v=cross_v, visual_gain=gain)
                logits, past_k, past_v, _ = dec.run(None, feed)
            logits[:, tokens.eos_id] = -np.inf
            ids = logits.argmax(-1)[:, None].astype(np.int64)
    run(images[0])
    return both("caption", timed(run, images))


def build_ved_checkpoint(folder: Path) -> dict:
    """A ViT-GPT2 VisionEncoderDecoder from configs (random weights), saved with tokenizer and processor."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = [line.strip() for line in (ROOT / "export" / "tiny.py").read_text().splitlines() if line.strip()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"]))
    tokenizer = transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                               eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    encoder = transformers.ViTConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                                     intermediate_size=1536, image_size=224, patch_size=16)
    decoder = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=384, n_layer=4, n_head=6, n_positions=64,
                                      add_cross_attention=True, is_decoder=True, bos_token_id=eos, eos_token_id=eos)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = eos
    model = transformers.VisionEncoderDecoderModel(config=config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return {"what": "ViT-GPT2 VisionEncoderDecoder from configs (ViT 6x384, GPT2 4x384), random weights",
            "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def optimum_timings(images, checkpoint: Path, work: Path) -> dict:
    """optimum ORTModelForVision2Seq fp32 and dynamic int8 on the checkpoint."""
    import torch
    from optimum.onnxruntime import ORTModelForVision2Seq, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import ViTImageProcessor

    import onnxruntime as ort

    torch.set_num_threads(1)
    processor = ViTImageProcessor.from_pretrained(checkpoint)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    fp32_dir = work / "optimum-fp32"
    model = ORTModelForVision2Seq.from_pretrained(checkpoint, export=True, session_options=opts, use_cache=True)
    model.save_pretrained(fp32_dir)
    int8_dir = work / "optimum-int8"
    qconfig = AutoQuantizationConfig.avx2(is_static=False, per_channel=True)
    for onnx_file in sorted(fp32_dir.glob("*.onnx")):
        ORTQuantizer.from_pretrained(fp32_dir, file_name=onnx_file.name).quantize(save_dir=int8_dir,
                                                                                   quantization_config=qconfig)
    for extra in fp32_dir.iterdir():
        if extra.suffix != ".onnx" and extra.is_file() and not (int8_dir / extra.name).exists():
            shutil.copy(extra, int8_dir / extra.name)
    quantized = {p.name.replace("_quantized", ""): p.name for p in int8_dir.glob("*_quantized.onnx")}
    int8 = ORTModelForVision2Seq.from_pretrained(
        int8_dir, encoder_file_name=quantized.get("encoder_model.onnx"),
        decoder_file_name=quantized.get("decoder_model.onnx"),
        decoder_with_past_file_name=quantized.get("decoder_with_past_model.onnx"), session_options=opts)

    def hf_run(m):
        def run(image):
            pixels = processor(images=image, return_tensors="pt").pixel_values
            m.generate(pixel_values=pixels, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False,
                       num_beams=1)
        run(images[0])
        return run
    import optimum.version

    out = {"optimum": optimum.version.__version__}
    out.update(both("optimum_fp32", timed(hf_run(model), images)))
    out.update(both("optimum_int8", timed(hf_run(int8), images)))
    return out


def converted_timings(images, checkpoint: Path, work: Path) -> dict:
    """edgecap bundles of the checkpoint from `python -m export convert` (fp32 and --int8)."""
    from export.convert import convert

    out = {}
    for label, int8_flag in (("fp32", False), ("int8", True)):
        bundle = work / f"edgecap-{label}"
        convert(checkpoint, bundle, int8=int8_flag)
        forced = edgecap_forced(OnnxCaptioner.load(bundle, threads=1), images)
        out[f"edgecap_{label}_ms"], out[f"edgecap_{label}_cpu_ms"] = forced["caption_ms"], forced["caption_cpu_ms"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: edgecap, torch, plain, "
                                                   "converted, optimum")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the ViT-GPT2 checkpoint folder (built there when missing)")
    args = parser.parse_args(argv)
    images = [read_image(p) for p in args.photos]
    captioner = OnnxCaptioner.load(args.model, threads=1)
    skip = set(filter(None, args.skip.split(",")))
    report: dict = {"tokens": TOKENS, "threads": 1, "photos": len(images)}

    def part(name, fn, *a):
        if name in skip:
            report[name] = {"skipped": "--skip"}
            return
        try:
            report[name] = fn(*a)
        except ImportError as exc:
            report[name] = {"skipped": f"needs {exc.name or exc} (pip install edgecap[export])"}
        except Exception as exc:  # noqa: BLE001 - one failed part must not hide the others
            traceback.print_exc()
            report[name] = {"skipped": f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"}
        args.json.write_text(json.dumps(report, indent=2) + "\n")

    part("edgecap", edgecap_forced, captioner, images)
    part("torch", torch_eager, captioner, images)
    part("plain", plain_onnxruntime, captioner, images)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or Path(tmp) / "checkpoint"
        if not {"converted", "optimum"} <= skip and not (checkpoint / "config.json").exists():
            part("checkpoint", build_ved_checkpoint, checkpoint)
        part("converted", converted_timings, images, checkpoint, Path(tmp))
        part("optimum", optimum_timings, images, checkpoint, Path(tmp))
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
