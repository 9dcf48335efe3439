"""`edgecap bench`: per-stage latency of captioning on this machine."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edgecap.image import normalize, read_image

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TARGET_MS = 60.0


def _stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"median_ms": round(float(np.median(a)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "min_ms": round(float(a.min()), 2)}


def run_bench(args, captioner) -> int:
    from edgecap.caption import describer_for
    from edgecap.cli import decoding_options
    from edgecap.model import VisualFeatures

    paths = args.paths or sorted(str(p) for p in ASSETS.glob("*.jpg"))
    if not paths:
        raise ValueError("no photos to benchmark: pass some paths")
    images = [read_image(p) for p in paths]
    options = decoding_options(args, captioner)
    describer = describer_for(captioner)
    prep = captioner.bundle.preprocessing
    stages: dict[str, list[float]] = {"preprocess": [], "encode": [], "decode": [], "total": []}
    steps = []
    for run in range(args.warmup + args.runs):
        image = images[run % len(images)]
        t0 = time.perf_counter()
        pixels = normalize(captioner.preprocess(image), prep)[None]
        t1 = time.perf_counter()
        cross_k, cross_v, pooled = captioner.encoder.run(None, {"pixels": pixels})
        t2 = time.perf_counter()
        features = VisualFeatures(cross_k, cross_v, pooled)
        decoded = describer.describe_features([image], features, options)  # candidates, perception, grounding
        t3 = time.perf_counter()
        if run >= args.warmup:
            for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                value *= 1000
                stages[name].append(value)
            steps.append(len(decoded[0].tokens) + 1)
    report = {"model": captioner.bundle.name, "provider": captioner.provider,
              "threads": captioner.threads or "default", "beams": options.beam_size,
              "calibration": options.calibrate, "rerank": options.rerank and captioner.memory is not None,
              "runs": args.runs,
              "mean_tokens": round(float(np.mean(steps)), 1),
              "stages": {k: _stats(v) for k, v in stages.items()}}
    decode_ms = np.asarray(stages["decode"]) / np.asarray(steps)
    report["decode_per_step_ms"] = round(float(np.median(decode_ms)), 3)
    report["target_ms"] = TARGET_MS
    report["meets_target"] = report["stages"]["total"]["median_ms"] <= TARGET_MS
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"model {report['model']} on {report['provider']}, beams {options.beam_size}, "
              f"SPARC {'on' if options.calibrate else 'off'}, rerank {'on' if report['rerank'] else 'off'}, "
              f"{args.runs} runs, "
              f"{report['mean_tokens']} tokens/caption")
        for name, s in report["stages"].items():
            print(f"  {name:<10} median {s['median_ms']:8.2f} ms   p90 {s['p90_ms']:8.2f} ms")
        print(f"  per decode step {report['decode_per_step_ms']:.3f} ms; target <= {TARGET_MS:.0f} ms per caption: "
              f"{'met' if report['meets_target'] else 'NOT met'}")
    return 0
