"""How much could reranking a bundle's candidate captions buy on val?

    python bench/rerank.py [--model models/edgecap-base] [--samples 8] [--neighbours 15]

For every val photo the bundle writes a pool of candidates: its beam caption, its greedy
caption and `--samples` sampled ones. Four ways to pick one are scored on all of val:
  beam       the beam caption alone (`--no-rerank`);
  consensus  the candidate closest (CIDEr-D) to the rest of the pool: minimum Bayes risk;
  neighbours the candidate closest to the human captions of the `--neighbours` train photos
             nearest in the encoder's pooled features (Devlin et al. 2015). Shipping it
             would mean shipping those captions, which the data's licence and this repo's
             rules do not allow, so this row is an upper bound on what retrieval could add;
  own-neighbours  the same with the bundle's own beam captions of those train photos in
             place of the human ones: what ships as edgecap/core/memory.py, except that there
             the features are reduced to 128 dimensions and the idf comes from the memory.
Prints one JSON object of metrics per method.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgecap.core.decoding import preset  # noqa: E402
from edgecap.core.image import read_image  # noqa: E402
from edgecap.core.model import OnnxCaptioner, VisualFeatures  # noqa: E402
from edgecap.evaluation.dataset_eval import read_split  # noqa: E402
from edgecap.evaluation.evaluate import evaluate_captions  # noqa: E402
from edgecap.metrics.cider import CiderD  # noqa: E402

REPORTED = ("bleu_4", "cider", "chair_s", "chair_i", "object_f1", "vocab_size", "mean_length")


def encode_all(captioner: OnnxCaptioner, root: Path, records: list[dict], batch: int = 32) -> VisualFeatures:
    return VisualFeatures.concat([captioner.encode([read_image(root / r["file"]) for r in records[i:i + batch]])
                                  for i in range(0, len(records), batch)])


def caption_all(captioner: OnnxCaptioner, features: VisualFeatures, options, batch: int = 64) -> list[str]:
    out: list[str] = []
    for i in range(0, len(features), batch):
        out += [r.caption for r in captioner.caption_features(features.take(slice(i, i + batch)), options)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "edgecap-base")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--neighbours", type=int, default=15)
    args = ap.parse_args(argv)

    root = args.data / "captioned"
    val, train = read_split(root, "val"), read_split(root, "train")
    captioner = OnnxCaptioner.load(args.model)
    val_features = encode_all(captioner, root, val)
    pools = [caption_all(captioner, val_features, preset("brief", rerank=False)),
             caption_all(captioner, val_features, preset("brief", beam_size=1, rerank=False))]
    pools += [caption_all(captioner, val_features, preset("brief", beam_size=1, temperature=args.temperature, seed=s))
              for s in range(args.samples)]

    cider = CiderD([r["captions"] for r in train])  # idf from the train references
    vectors: dict[str, object] = {}

    def vec(text: str):
        if text not in vectors:
            vectors[text] = cider.vector(text)
        return vectors[text]

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    train_features = encode_all(captioner, root, train)
    nearest = np.argsort(-(unit(val_features.pooled) @ unit(train_features.pooled).T), axis=1)[:, :args.neighbours]

    own_memory = caption_all(captioner, train_features, preset("brief", rerank=False))
    picks: dict[str, list[str]] = {"beam": pools[0], "consensus": [], "neighbours": [], "own-neighbours": []}
    for i in range(len(val)):
        pool = [p[i] for p in pools]
        candidates = list(dict.fromkeys(pool))
        others = {c: [vec(o) for j, o in enumerate(pool) if j != pool.index(c)] for c in candidates}
        picks["consensus"].append(max(candidates, key=lambda c: cider.similarity(vec(c), others[c])))
        pseudo = [vec(t) for j in nearest[i] for t in train[j]["captions"]]
        picks["neighbours"].append(max(candidates, key=lambda c: cider.similarity(vec(c), pseudo)))
        own = [vec(own_memory[j]) for j in nearest[i]]
        picks["own-neighbours"].append(max(candidates, key=lambda c: cider.similarity(vec(c), own)))

    synonyms = args.data / "chair" / "synonyms.txt"
    references = {r["file"]: r["captions"] for r in val}
    report = {}
    for name, captions in picks.items():
        metrics = evaluate_captions({r["file"]: c for r, c in zip(val, captions)}, references,
                                    synonyms_path=synonyms if synonyms.is_file() else None)
        report[name] = {k: round(metrics[k], 4) for k in REPORTED}
    report["pool"] = {"candidates_per_photo": len(pools), "temperature": args.temperature,
                      "neighbours": args.neighbours}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
