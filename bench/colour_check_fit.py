"""How well the pixels of what a colour word describes predict that the references use the word.

Every colour word of every candidate in a decision cache (bench/decision_cache.py) is checked
with edgecap.vision.colour_check against the cached detections and the photo; a colour is
"confirmed" when one of the photo's human references uses the same word (grey = gray). The
table gives, for each minimum share, how many colours are kept and how often they are
confirmed, and the same for the ones removed: the threshold should remove mostly unconfirmed
colours. A lower bound on precision: references leave many true colours unsaid.

    python bench/colour_check_fit.py /tmp/dc-val.json --data ../shared/data
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecap.core.image import read_image  # noqa: E402
from edgecap.vision.colour_check import colour_share, colour_targets, region, shares  # noqa: E402
from edgecap.vision.grounding import grounding_table  # noqa: E402

SAME = {"grey": "gray", "blonde": "blond", "colourful": "colorful", "golden": "gold"}


def said(text: str) -> set[str]:
    return {SAME.get(w, w) for w in re.findall(r"[a-z]+", text.lower())}


def rows(cache: dict, data: Path, min_score: float) -> list[tuple[str, str, float, bool]]:
    """(colour word, source, share, confirmed) for each distinct (photo, word, target)."""
    table = grounding_table()
    out = []
    for key, entry in cache.items():
        refs = set().union(*(said(r) for r in entry["refs"]))
        boxes = {}
        for name, score, box in entry["objects"]:
            if score >= min_score:
                boxes.setdefault(name, tuple(box))
        rgb = None
        seen = set()
        for text in dict.fromkeys(entry["texts"]):
            for word, cls in colour_targets(text, table):
                box = boxes.get(cls) if cls else None
                if (word, box) in seen:
                    continue
                seen.add((word, box))
                if rgb is None:
                    rgb = read_image(data / "captioned" / key)
                out.append((word, entry["source"][:4], colour_share(word, shares(region(rgb, box))),
                            SAME.get(word, word) in refs))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--min-score", type=float, default=0.3, help="detections that give a colour its box")
    args = ap.parse_args()
    found = rows(json.loads(args.cache.read_text()), args.data, args.min_score)
    share = np.array([r[2] for r in found])
    ok = np.array([r[3] for r in found])
    print(f"{len(found)} colour words; confirmed by a reference {ok.mean():.3f}")
    print("min share | kept  confirmed | removed  confirmed")
    for t in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4):
        keep = share >= t
        print(f"{t:9.2f} | {keep.sum():5d} {ok[keep].mean() if keep.any() else float('nan'):9.3f} | "
              f"{(~keep).sum():7d} {ok[~keep].mean() if (~keep).any() else float('nan'):9.3f}")
    per = defaultdict(list)
    for word, _, s, c in found:
        per[word].append((s, c))
    print("word: n, confirmed; removed at 0.1 (confirmed)")
    for word, v in sorted(per.items(), key=lambda kv: -len(kv[1])):
        s = np.array([x[0] for x in v])
        c = np.array([x[1] for x in v])
        print(f"  {word:9} {len(v):5d} {c.mean():.2f}; {(s < 0.1).sum():4d} ({c[s < 0.1].mean() if (s < 0.1).any() else float('nan'):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
