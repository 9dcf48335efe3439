"""Parity of an exported bundle with its torch checkpoint, on real photos.

    python bench/parity.py --checkpoint runs/student.pt --fp32 runs/student-fp32 \
        [--int8 models/edgecap-base] [--images 64]

Greedy captions from the onnxruntime bundle against the torch SPARC reference generate
(export/generate.py), with calibration on (the bundle's setting) and off, plus the
largest logit difference of the first decoding steps; with --int8 also the int8
bundle's agreement with fp32. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgecap.core.decoding import DecodingOptions  # noqa: E402
from edgecap.core.image import normalize, read_image, resize_for_model  # noqa: E402
from edgecap.core.model import OnnxCaptioner  # noqa: E402

GREEDY = dict(beam_size=1, min_length=0, max_length=20, rerank=False)  # the decoder itself, not the memory


def photos_for(data: Path, count: int) -> list[Path]:
    from export.data import parity_images

    return parity_images(data, count)


def logit_error(model, captioner: OnnxCaptioner, pixels: np.ndarray, steps: int = 6) -> float:
    """Largest |logit| difference over the first greedy steps (torch-chosen tokens fed to both)."""
    import torch

    from edgecap.core.model import VisualFeatures

    features = VisualFeatures(*captioner.encoder.run(["cross_k", "cross_v", "pooled"], {"pixels": pixels}))
    with torch.no_grad():
        cross_k, cross_v = model.visual_cache(model.grid_tokens(torch.from_numpy(pixels)))
    b = pixels.shape[0]
    gain = np.ones((model.cfg.n_layers, b, cross_k.shape[3]), np.float32)
    dec = captioner.decoder
    cache, rows = dec.empty_cache(b), dec.start(features, 1)
    past_k = past_v = model.empty_cache(b)
    ids = np.full((b, 1), model.cfg.bos_id, np.int64)
    worst = 0.0
    for _ in range(steps):
        logits, cache, _ = dec.step(ids, cache, rows, gain)
        with torch.no_grad():
            ref, past_k, past_v, _ = model.step(torch.from_numpy(ids), past_k, past_v, cross_k, cross_v,
                                                torch.from_numpy(gain))
        worst = max(worst, float(np.abs(logits - ref.numpy()).max()))
        ids = ref.argmax(-1).numpy()[:, None].astype(np.int64)
    return worst


def main() -> int:
    import torch

    from export.generate import captioner_generate
    from export.pipeline import load_checkpoint
    from export.quantize import parity_report

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--fp32", type=Path, required=True, help="fp32 bundle exported from the checkpoint")
    p.add_argument("--int8", type=Path, default=None, help="int8 bundle to compare with the fp32 one")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()

    model, _, _, _ = load_checkpoint(args.checkpoint)
    fp32 = OnnxCaptioner.load(args.fp32, provider="cpu")
    prep = fp32.bundle.preprocessing
    paths = photos_for(args.data, args.images)
    photos = [read_image(path) for path in paths]
    report: dict = {"images": len(photos), "checkpoint": str(args.checkpoint), "bundle": str(args.fp32)}
    worst = 0.0
    for name, spec in (("sparc_on", fp32.bundle.calibration), ("sparc_off", None)):
        exact = same = total = 0
        for i in range(0, len(photos), args.batch):
            chunk = photos[i:i + args.batch]
            pixels = np.stack([normalize(resize_for_model(im, prep), prep) for im in chunk])
            ref = captioner_generate(model, torch.from_numpy(pixels), max_new_tokens=GREEDY["max_length"],
                                     calibration=spec)
            got = [r.tokens for r in fp32.caption(chunk, DecodingOptions(**GREEDY, calibrate=spec is not None))]
            exact += sum(a == b for a, b in zip(ref, got))
            for a, b in zip(ref, got):
                same += sum(x == y for x, y in zip(a, b))
                total += max(len(a), len(b))
            if spec is None:
                worst = max(worst, logit_error(model, fp32, pixels))
        report[name] = {"exact_captions": round(exact / len(photos), 4),
                        "token_agreement": round(same / max(total, 1), 4)}
    report["max_abs_logit_error_fp32"] = worst
    if args.int8:
        int8 = OnnxCaptioner.load(args.int8, provider="cpu")
        report["int8_vs_fp32"] = {k: round(v, 4) for k, v in
                                  parity_report(fp32, int8, photos, DecodingOptions(**GREEDY)).items()}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
