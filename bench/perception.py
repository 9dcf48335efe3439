"""How precise and how fast is the object detector at each input size, fp32 and int8?

    nice -n 10 python bench/perception.py [--data ../shared/data] [--sizes 416,320,256] [--unlabeled 120]
                                          [--imagenet 50] [--json out.json]

For each detector variant (input size x fp32/int8, built from ../shared/models exactly as
`python -m export perception` builds it; int8 calibrated on unlabelled photos that are
not measured here):
  precision@t  share of (photo, class) pairs reported at score >= t that one of the
               photo's five human captions names (CHAIR synonyms), on the COCO photos of
               the captioned train split;
  recall@t     share of (photo, class) pairs that the captions name which are reported;
  agree@0.5    on unlabelled COCO and ADE20K photos: Jaccard overlap of the class sets at
               score >= 0.5 with the fp32 416 px reference;
  ms           median wall time of letterbox + graph + decode, one onnxruntime thread;
  cpu_ms       the same in process CPU time (less disturbed by other jobs on the machine).
With --faces it counts the faces YuNet finds at each input size on the same photos.
With --imagenet N it also checks that the shipped int8 encoder's pooled vector through
the ImageNet head gives the same top-1 class as the fp32 torch backbone on N photos.
Prints a markdown table and, with --json, writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgecap.core.image import read_image  # noqa: E402
from edgecap.core.providers import create_session  # noqa: E402
from edgecap.metrics.chair import chair_objects, load_chair_table  # noqa: E402
from edgecap.vision.perception import DetectorSettings, decode_yolox, letterbox  # noqa: E402

# export.* (onnx, onnxruntime.quantization, torch) is imported only where needed, so that the
# --pipeline RSS is what the run-time package costs.

THRESHOLDS = (0.3, 0.5, 0.7)


def detector_bytes(models: Path, size: int, int8: bool, calibration: list[Path]) -> bytes:
    from export.perception import DETECTOR_SOURCE, check_source, detector_at_size, quantize_detector

    model = detector_at_size(check_source(models, DETECTOR_SOURCE), size)
    if not int8:
        return model.SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "detector_int8.onnx"
        quantize_detector(model, out, calibration, size)
        return out.read_bytes()


def run_detector(session, settings: DetectorSettings, classes, bgr: np.ndarray):
    wall, cpu = time.perf_counter(), time.process_time()
    pixels, _ = letterbox(bgr, settings.input_size)
    raw = session.run(None, {session.get_inputs()[0].name: pixels})[0][0]
    _, scores, cls = decode_yolox(raw, settings)
    found: dict[str, float] = {}
    for s, c in zip(scores, cls):
        found[classes[c]] = max(found.get(classes[c], 0.0), float(s))
    return found, (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def measure(session, settings, classes, photos, named) -> dict:
    hits = {t: [0, 0] for t in THRESHOLDS}  # named, reported
    recalled = {t: 0 for t in THRESHOLDS}
    n_named = 0
    wall, cpu, found_all = [], [], []
    for bgr, truth in zip(photos, named):
        found, w, c = run_detector(session, settings, classes, bgr)
        wall.append(w)
        cpu.append(c)
        found_all.append(found)
        if truth is None:
            continue
        n_named += len(truth)
        for t in THRESHOLDS:
            reported = {k for k, s in found.items() if s >= t}
            hits[t][0] += len(reported & truth)
            hits[t][1] += len(reported)
            recalled[t] += len(reported & truth)
    out = {"ms": float(np.median(wall)), "cpu_ms": float(np.median(cpu))}
    if n_named:
        for t in THRESHOLDS:
            out[f"precision@{t}"] = hits[t][0] / max(hits[t][1], 1)
            out[f"reported@{t}"] = hits[t][1]
            out[f"recall@{t}"] = recalled[t] / n_named
    return out, found_all


def agreement(found: list[dict], reference: list[dict], t: float = 0.5) -> float:
    scores = []
    for a, b in zip(found, reference):
        sa, sb = {k for k, s in a.items() if s >= t}, {k for k, s in b.items() if s >= t}
        scores.append(1.0 if not sa and not sb else len(sa & sb) / len(sa | sb))
    return float(np.mean(scores))


def imagenet_check(data: Path, model: Path, count: int) -> dict:
    """Top-1 of head(pooled from the shipped int8 encoder) vs the fp32 torch backbone + classifier."""
    import torch

    from edgecap.core.image import normalize, resize_for_model
    from edgecap.core.model import OnnxCaptioner
    from edgecap.vision.perception import Perceiver
    from export.data import load_records
    from export.efficientnet import EfficientNetLite, weights_path

    captioner = OnnxCaptioner.load(model, provider="cpu", threads=1)
    perceiver = Perceiver.from_bundle(captioner.bundle, ["CPUExecutionProvider"], 1)
    state = torch.load(weights_path("lite0"), map_location="cpu", weights_only=True)
    net = EfficientNetLite.from_state_dict(state).eval()
    w, b = state["_fc.weight"].numpy(), state["_fc.bias"].numpy()
    records = [r for r in load_records(data, unlabeled=True) if r.split == "unlabeled"]
    records = records[:: max(1, len(records) // count)][:count]
    same_int8, same_head, coarse_same, confident, confident_same, prob_gap = 0, 0, 0, 0, 0, []
    prep = captioner.bundle.preprocessing
    for r in records:
        rgb = read_image(r.path)
        pooled = captioner.encode([rgb]).pooled[0]
        x = torch.from_numpy(normalize(resize_for_model(rgb, prep), prep))[None]
        with torch.no_grad():
            ref_probs = net.classify(x)[0].softmax(-1).numpy()
        ref = int(ref_probs.argmax())
        head = perceiver.head
        logits = head.logits(pooled)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        ours = int(np.argmax(probs))
        prob_gap.append(abs(float(probs[ref]) - float(ref_probs[ref])))
        if max(ref_probs[ref], probs[ours]) >= 0.5:  # what a hedged statement could use
            confident += 1
            confident_same += head.coarse_index[ours] == head.coarse_index[ref]
        same_int8 += ours == ref
        same_head += int(np.argmax(w @ pooled + b)) == ours  # int8 head vs fp32 head, same pooled vector
        coarse_same += head.coarse_index[ours] == head.coarse_index[ref]
    n = len(records)
    return {"photos": n, "top1_int8_encoder_vs_fp32_backbone": same_int8 / n,
            "coarse_top1_int8_encoder_vs_fp32_backbone": coarse_same / n,
            "top1_int8_head_vs_fp32_head": same_head / n,
            "photos_either_top1_at_least_0.5": confident,
            "coarse_top1_agreement_there": confident_same / max(confident, 1),
            "median_abs_prob_gap_of_fp32_top1": float(np.median(prob_gap))}


def faces_check(model: Path, photos: list[np.ndarray], named: list, sides=(160, 240, 320)) -> list[dict]:
    """Faces found and CPU time of the shipped face detector at each input size.

    On the captioned photos, photos with a face are split by whether a caption names a
    person: faces where nobody is mentioned are mostly false.
    """
    from dataclasses import replace

    from edgecap.core.bundle import load_bundle
    from edgecap.vision.perception import Perceiver

    perceiver = Perceiver.from_bundle(load_bundle(model), ["CPUExecutionProvider"], 1)
    rows = []
    for side in sides:
        perceiver.face_settings = replace(perceiver.face_settings, long_side=side)
        perceiver.detect_faces(photos[0])
        counts, cpu = [], []
        for bgr in photos:
            start = time.process_time()
            counts.append(len(perceiver.detect_faces(bgr)))
            cpu.append((time.process_time() - start) * 1000)
        person = [("person" in n) if n is not None else None for n in named]
        rows.append({"long_side": side, "faces": int(sum(counts)), "photos_with_faces": int(np.count_nonzero(counts)),
                     "captioned_with_person": person.count(True),
                     "with_face_where_person_named": sum(1 for c, p in zip(counts, person) if c and p is True),
                     "captioned_without_person": person.count(False),
                     "with_face_where_nobody_named": sum(1 for c, p in zip(counts, person) if c and p is False),
                     "cpu_ms": float(np.median(cpu))})
    return rows


def pipeline_check(model: Path, paths: list[Path], repeats: int = 3) -> dict:
    """Today's caption plus perception on one decoded frame per photo, and the process's peak RSS.

    Each photo runs `repeats` times and keeps its fastest run (the least disturbed by other
    jobs on a shared machine); reported are medians over photos, wall and process CPU time.
    """
    import resource

    from edgecap.core.decoding import DecodingOptions
    from edgecap.core.model import OnnxCaptioner
    from edgecap.vision.perception import Perceiver

    captioner = OnnxCaptioner.load(model, provider="cpu", threads=1)
    perceiver = Perceiver.from_bundle(captioner.bundle, ["CPUExecutionProvider"], 1)
    rows: dict[str, list[float]] = {"caption_ms": [], "perceive_ms": [], "caption_cpu_ms": [], "perceive_cpu_ms": []}
    for i, path in enumerate(paths):
        rgb = read_image(path)
        best = {k: float("inf") for k in rows}
        for _ in range(repeats):
            w, c = time.perf_counter(), time.process_time()
            captioner.caption([rgb], DecodingOptions())
            pooled = captioner.encode([rgb]).pooled[0]  # cached: the caption encoded this frame already
            w2, c2 = time.perf_counter(), time.process_time()
            perceiver.perceive(rgb, pooled)
            took = {"caption_ms": w2 - w, "caption_cpu_ms": c2 - c, "perceive_ms": time.perf_counter() - w2,
                    "perceive_cpu_ms": time.process_time() - c2}
            best = {k: min(best[k], took[k] * 1000) for k in rows}
        if i:  # the first photo warms the sessions up
            for k in rows:
                rows[k].append(best[k])
    out: dict[str, float] = {k: float(np.median(v)) for k, v in rows.items()}
    out["photos"] = len(paths) - 1
    out["repeats"] = repeats
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--models", type=Path, default=None, help="detector folder (default: models/ next to --data)")
    p.add_argument("--model", type=Path, default=REPO / "models" / "edgecap-base")
    p.add_argument("--sizes", default="416,320,256")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--unlabeled", type=int, default=120, help="unlabelled photos for agreement and timing")
    p.add_argument("--imagenet", type=int, default=0, help="photos for the ImageNet head check (0: skip)")
    p.add_argument("--faces", action="store_true", help="also time the face detector at 160/240/320 px")
    p.add_argument("--pipeline", type=int, default=0,
                   help="time today's caption + perception on this many COCO photos, and report peak RSS; alone, "
                        "this skips the detector sweep (run it in a fresh process: RSS is the process's peak)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.pipeline:
        rows = [json.loads(line) for line in (args.data / "captioned" / "captions.jsonl").open(encoding="utf-8")]
        coco = [args.data / "captioned" / r["file"] for r in rows if r["split"] == "train" and
                r["source"].startswith("coco")]
        report = pipeline_check(args.model, coco[:args.pipeline + 1])
        print("pipeline:", json.dumps(report))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return 0
    from export.data import calibration_images, load_records
    from export.perception import coco_classes

    models = args.models or args.data.parent / "models"
    classes = coco_classes(args.data)
    table = load_chair_table(args.data / "chair" / "synonyms.txt")
    coco = [r for r in load_records(args.data, split="train") if r.key.startswith("coco")]
    unlabeled = [r for r in load_records(args.data, unlabeled=True) if r.split == "unlabeled"]
    calibration = calibration_images(args.data)
    calibrated = {c.name for c in calibration}
    pool = [r for r in unlabeled if r.key not in calibrated]
    unl = pool[:: max(1, len(pool) // args.unlabeled)][:args.unlabeled]
    photos = [np.ascontiguousarray(read_image(r.path)[:, :, ::-1]) for r in coco + unl]
    named = [set().union(*(chair_objects(c, table) for c in r.captions)) for r in coco] + [None] * len(unl)
    results, reference = [], None
    for size in (int(s) for s in args.sizes.split(",") if s):  # --sizes "" skips the sweep
        for int8 in (False,) if args.no_int8 else (False, True):
            session = create_session(detector_bytes(models, size, int8, calibration), ["CPUExecutionProvider"], 1)
            settings = DetectorSettings(input_size=size)
            run_detector(session, settings, classes, photos[0])  # warm up
            row, found = measure(session, settings, classes, photos, named)
            if reference is None:
                reference = found
            row["agree@0.5_unlabeled"] = agreement(found[len(coco):], reference[len(coco):])
            row.update(size=size, weights="int8" if int8 else "fp32")
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    cols = ["size", "weights", "precision@0.5", "precision@0.7", "recall@0.5", "recall@0.7", "reported@0.5",
            "agree@0.5_unlabeled", "ms", "cpu_ms"]
    print(f"{len(coco)} COCO train photos, {len(unl)} unlabelled photos, 1 onnxruntime thread")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    report = {"photos": {"coco_train": len(coco), "unlabeled": len(unl)}, "detector": results}
    if args.imagenet:
        report["imagenet"] = imagenet_check(args.data, args.model, args.imagenet)
        print("imagenet:", json.dumps(report["imagenet"]))
    if args.faces:
        report["faces"] = faces_check(args.model, photos, named)
        for row in report["faces"]:
            print("faces:", json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
