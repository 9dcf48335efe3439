"""Cache what the decision (edgecap.caption.Describer.decide_texts) reads for each photo, so
its rules can be replayed and measured in seconds (bench/decision_replay.py).

Per photo: the candidate captions, the caption memory's neighbours and the perception
(detections with boxes, faces, ImageNet labels). On a train photo the memory holds the
photo itself (the bundle's own caption of it, row i for the i-th train photo); that neighbour
is dropped, as a val photo would not find itself. (Its similarity is about 0.94, not 1: the
memory's features come from the export pipeline. Caches made before this went by similarity
and kept it.) --photos FILE caches photos nobody captioned (no references), for audits.

    python bench/decision_cache.py --data ../shared/data --split val --out /tmp/dc-val.json
    python bench/decision_cache.py --data ../shared/data --split train --coco-only --out /tmp/dc-train-coco.json

--pools g8,g4,n8 also caches other candidate pools under "pools" (g: with the greedy row, n:
without; the number: sampled rows; a tail "s1": seed 1, so g8s1 measures the seed's noise),
each decoded as the bundle would decode it, so bench/decision_replay.py --pool NAME can
score another pool on the same perception. --staged caches the bundle's pool decoded in two
loops, "first" (beam and greedy) and "samples" (the sampled rows alone), for
decision_replay.py --early first --pool samples.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecap.caption import describer_for  # noqa: E402
from edgecap.core.decoding import DecodingOptions, Pool, decode_pool, image_seed  # noqa: E402
from edgecap.core.image import as_rgb, read_image  # noqa: E402
from edgecap.core.model import OnnxCaptioner  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/edgecap-base"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--coco-only", action="store_true")
    ap.add_argument("--flickr", type=int, default=None, help="at most this many Flickr8k photos (fixed sample)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pools", default="", help="comma list of extra pools to cache, e.g. g8,g4,g0,n8")
    ap.add_argument("--staged", action="store_true", help="also cache pools 'first' and 'samples' (two loops)")
    ap.add_argument("--photos", type=Path, default=None,
                    help="a file listing photos without references (one path a line) to cache instead of --split")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ground_calibrate import sample
    captioned = args.data / "captioned"
    rows = [json.loads(line) for line in (captioned / "captions.jsonl").read_text().splitlines() if line.strip()]
    chosen = [r for r in rows if r["split"] == args.split]
    memory_row = {r["file"]: i for i, r in enumerate(r for r in rows if r["split"] == "train")}  # export memory's order
    coco = [r for r in chosen if r["source"].startswith("coco")]
    flickr = [r for r in chosen if not r["source"].startswith("coco")]
    if args.coco_only:
        flickr = []
    elif args.flickr is not None:
        flickr = sample(flickr, args.flickr)
    chosen = coco + flickr
    if args.photos:  # photos nobody captioned (the unlabelled pool): for audits and detector-only statistics
        chosen = [{"file": str(Path(line.strip()).resolve()), "source": "unlabeled", "captions": []}
                  for line in args.photos.read_text().splitlines() if line.strip()]

    captioner = OnnxCaptioner.load(args.model, threads=1)
    describer = describer_for(captioner)
    memory = captioner.memory
    done = json.loads(args.out.read_text()) if args.out.is_file() else {}
    options = DecodingOptions()
    pools = {name: Pool(greedy=name[0] == "g", samples=int(re.match(r"[gn](\d+)", name).group(1)),
                        temperature=memory.settings.temperature) for name in filter(None, args.pools.split(","))}
    if args.staged:  # the same pool decoded in two loops: beam and greedy, then the sampled rows alone
        pools["first"] = replace(pools.get("g0", Pool(greedy=True, temperature=memory.settings.temperature)))
        pools["samples"] = None
    for i, r in enumerate(chosen):
        if r["file"] in done:
            continue
        rgb = as_rgb(read_image(captioned / r["file"]))
        features = captioner.encode([rgb])
        pool = captioner.candidates(features, options)[0]
        texts = [captioner.tokenizer.decode(d.tokens) for d in pool]
        extra = {name: [captioner.tokenizer.decode(d.tokens) for d in (
            pool_of(captioner, features, replace(options, beam_size=1, temperature=memory.settings.temperature),
                    Pool(samples=memory.settings.samples - 1, temperature=memory.settings.temperature))
            if p is None else pool_of(
                captioner, features, replace(options, seed=seed_of(name)), p))]
            for name, p in pools.items()}
        k = memory.settings.neighbours
        q = (np.asarray(features.pooled[0], np.float32) - memory.mean) @ memory.basis
        q /= max(np.linalg.norm(q), 1e-12)
        sims = memory.keys @ q
        order = np.argsort(-sims)[:k + 1]
        if args.split == "train" and not args.photos:  # the memory's row i is train photo i: drop the photo itself
            order = [j for j in order if j != memory_row[r["file"]]]
        query = np.array(order[:k])
        p = describer.perceiver.perceive(rgb, features.pooled[0])
        done[r["file"]] = {
            "source": r["source"], "refs": r["captions"], "texts": texts, "neighbours": [int(j) for j in query],
            "similarities": [round(float(sims[j]), 4) for j in query],
            "objects": [[d.name, round(d.score, 4), [round(v, 4) for v in d.box]] for d in p.objects],
            "faces": [[round(f.score, 4), [round(v, 4) for v in f.box]] for f in p.faces],
            "labels": [[n, round(float(pr), 4)] for n, pr in p.labels]}
        if extra:
            done[r["file"]]["pools"] = extra
        if i % 50 == 49:
            print(f"  {i + 1}/{len(chosen)}", file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(done))
    args.out.write_text(json.dumps(done))
    return 0


def seed_of(name: str) -> int | None:
    """The seed a pool name asks for: g8s1 -> 1; g8, first -> None (the bundle's)."""
    found = re.fullmatch(r"[gn]\d+s(\d+)", name)
    return int(found.group(1)) if found else None


def pool_of(captioner, features, options: DecodingOptions, pool: Pool):
    """One photo's candidates with another pool, decoded as OnnxCaptioner.candidates decodes the bundle's."""
    options = replace(options, max_length=min(options.max_length, captioner.arch.max_length - len(
        captioner.bundle.tokens.prompt_ids)))
    return decode_pool(captioner.decoder, features.take(slice(0, 1)), features.cross_k.shape[3],
                       captioner.bundle.tokens, options, captioner.calibration_for(options), pool,
                       image_seed(features.image_id(0), options.seed))


if __name__ == "__main__":
    sys.exit(main())
