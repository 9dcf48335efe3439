"""How well `edgecap read` reads, how often it invents text, and what it costs; picks the junk filter.

    python bench/text_eval.py --data ../shared/data            # from the repo root
    python bench/text_eval.py --data ../shared/data --det-side 640 --synthetic 300 --photos 240

Two sets, both built here at run time (nothing is stored in the repo):

* synthetic: words rendered with OpenCV's Hershey fonts (and DejaVu through Pillow when the
  system has it) onto real photos from <data>/unlabeled, 640x480, in 1-3 lines; cap height
  12-56 px, turned 0/90/180 degrees, some blurred, some low-contrast, some in perspective,
  JPEG-compressed. Score: share of the rendered words found in what was read, counted twice:
  over every rendered word, and over the legible ones only (a word drawn where the photo
  beneath is as bright as its letters -- pale text over a window -- cannot be read by anyone).
* no-text photos: val photos of <data>/captioned whose five captions mention no writing
  (sign, text, number, ...). Score: share of photos for which anything at all is read.
* quoted photos: photos of <data>/captioned whose captions quote their writing (a sign that
  says " no diving "). Score: share of the quoted words read (rough: captions paraphrase).

The models run once per image (raw lines cached in --cache); the filter settings are then swept
over the cached lines, so the curves cost nothing extra. Timings are wall-clock medians on
whatever else the machine is doing (CPU time beside them).
"""
from __future__ import annotations

import argparse
import glob
import json
import random
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgecap.vision.reading import SCRIPTS, ReadOptions, TextReader, tidy  # noqa: E402
from edgecap.vision.reading_order import TextLine  # noqa: E402
from text_synth import render  # noqa: E402  (bench/)

TEXT_WORDS = re.compile(r"\b(sign|signs|text|writing|written|words?|letters?|reads?|reading|says|number|numbers|"
                        r"banner|poster|billboard|label|menu|newspaper|book|magazine|logo|advertis\w*|jersey|"
                        r"scoreboard|license|licence|plate|clock|graffiti|brand|name)\b", re.I)


def words_of(text: str) -> list[str]:
    return [w for w in re.split(r"[^\w]+", text.lower()) if w]


def word_hits(truth: list[str], read: str) -> int:
    pool = words_of(read)
    hits = 0
    for w in (w.lower() for w in truth):
        if w in pool:
            pool.remove(w)
            hits += 1
    return hits


# --- the no-text photos -----------------------------------------------------------------------
# Photos whose captions do not mention writing but which, looked at by eye, do carry legible
# text (what the reader said of them is right): left out of the false-text count, listed apart.
LEGIBLE = {
    "coco-train2017_000000418049.jpg": "a tin held to the camera: Original, Pedigree",
    "coco-train2017_000000129648.jpg": "OAKLEY painted on a skate bowl",
    "coco-val2017_000000361919.jpg": "a ski-slope sign: erdgas",
    "coco-val2017_000000553664.jpg": "a magazine page: Learn Anywhere",
    "flickr8k_3568197730_a071d7595b.jpg": "a watermark: Matthew Botos Photography",
    "flickr8k_3484625231_5b1a1a07b8.jpg": "a football shirt: 22",
    "flickr8k_2559503010_84f20b3bc9.jpg": "a shop front: PNC BANK",
    "flickr8k_2450453051_f1d4a78ab4.jpg": "banners: PURINA Incredible Dog Challenge",
    "flickr8k_2933643390_1c6086684b.jpg": "a name on a football field: SHARPTON",
    "flickr8k_2545363449_1985903f82.jpg": "a kiosk: Brioche Doree, BUFFET",
    "flickr8k_2839807428_efe42423f2.jpg": "flags and a banner: GYMNASION, DOG SHOW",
    "flickr8k_3330654550_3efe9a71af.jpg": "a cycling jersey: LIETUVA",
    "flickr8k_3532539748_795d16ef07.jpg": "a T-shirt: USA",
    "flickr8k_210686241_b8e069fff3.jpg": "a White Sox shirt: CHICAGO",
}
def notext_photos(data: Path, n: int, seed: int = 0) -> list[Path]:
    rows = [json.loads(line) for line in open(data / "captioned" / "captions.jsonl", encoding="utf-8")]
    clean = [r for r in rows if r["split"] == "val" and not any(TEXT_WORDS.search(c) for c in r["captions"])]
    coco = [r for r in clean if r["source"].startswith("coco")]  # larger photos: all of them
    rest = [r for r in clean if not r["source"].startswith("coco")]
    random.Random(seed).shuffle(rest)
    return [data / "captioned" / r["file"] for r in (coco + rest)[:n]]


# Real photos whose captions quote the writing in them ('a sign that says " no diving "'): the
# longest quote is the truth; caption writers paraphrase now and then, so this is a rough check.
QUOTE = re.compile(r"""\b(?:says|reads|reading|words|phrase|sign)\s*,?\s*["'] ?([^"']{2,60}?) ?["']""", re.I)


def quoted_photos(data: Path) -> list[tuple[Path, list[str]]]:
    out = []
    for line in open(data / "captioned" / "captions.jsonl", encoding="utf-8"):
        row = json.loads(line)
        quotes = [m.group(1) for c in row["captions"] for m in QUOTE.finditer(c)]
        if quotes:
            out.append((data / "captioned" / row["file"], words_of(max(quotes, key=len))))
    return out


# --- running the models once, with a cache ----------------------------------------------------
def _raw(reader: TextReader, rgb: np.ndarray) -> dict:
    c0, t0 = time.process_time(), time.perf_counter()
    lines, regions = reader.recognise(rgb)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"lines": [[ln.text, ln.score, ln.box, ln.angle] for ln in lines], "regions": regions,
            "wall": wall, "cpu": cpu, "w": rgb.shape[1], "h": rgb.shape[0]}


def collect(args, part: str) -> list[dict]:
    """Raw lines for one set ("synthetic" or "photos"), read once and cached."""
    n = {"synthetic": args.synthetic, "photos": args.photos}.get(part, 0)
    tag = "".join(f"_{k}{v}" for k, v in sorted(args.reader_options.items()))
    cache = Path(args.cache) / f"text_eval_{part}_det{args.det_side}{tag}_n{n}_seed{args.seed}.json"
    if cache.exists():
        out = json.loads(cache.read_text())
        if part == "synthetic" and any("illegible" not in rec["meta"] for rec in out):
            rng = random.Random(args.seed)  # caches written before the legibility check: render again for it
            backgrounds = sorted(glob.glob(str(args.data / "unlabeled" / "images" / "*.jpg")))
            for rec in out:
                rec["meta"] = render(rng, backgrounds)[2]
        return out
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.json")  # resumes an interrupted run
    out = json.loads(partial.read_text()) if partial.exists() else []
    reader = TextReader(ReadOptions(det_side=args.det_side, threads=args.threads, **args.reader_options))
    reader.recognise(np.zeros((64, 64, 3), np.uint8))  # load the models before timing
    if part == "synthetic":
        rng = random.Random(args.seed)
        backgrounds = sorted(glob.glob(str(args.data / "unlabeled" / "images" / "*.jpg")))
        for i in range(n):
            rgb, truth, meta = render(rng, backgrounds)  # rendered even when cached: keeps rng in step
            if i < len(out):
                out[i]["meta"] = meta  # a partial cache may have been written before the legibility check
                continue
            out.append({"truth": truth, "meta": meta, **_raw(reader, rgb)})
            if args.save_examples and i < 12:
                cv2.imwrite(str(Path(args.cache) / f"synthetic_{i}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if i % 10 == 9:
                partial.write_text(json.dumps(out))
            print(f"\rsynthetic {i + 1}/{n}", end="", file=sys.stderr, flush=True)
    elif part == "quoted":
        for path, truth in quoted_photos(args.data):
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            out.append({"file": path.name, "truth": truth, **_raw(reader, rgb)})
    else:
        for i, path in enumerate(notext_photos(args.data, n, args.seed)):
            if i < len(out):
                continue
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            out.append({"file": path.name, **_raw(reader, rgb)})
            if i % 10 == 9:
                partial.write_text(json.dumps(out))
            print(f"\rphotos {i + 1}/{n}   ", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    cache.write_text(json.dumps(out))
    partial.unlink(missing_ok=True)
    return out


def score(runs: dict, options: ReadOptions) -> dict:
    def reading(rec):
        lines = [TextLine(t, s, tuple(map(tuple, b)), a) for t, s, b, a in rec["lines"]]
        return tidy(lines, rec["regions"], rec["w"], rec["h"], options)

    buckets: dict[str, list[int]] = {}
    for rec in runs["synthetic"]:
        text = reading(rec).text
        m = rec["meta"]
        legible = list(rec["truth"])
        for word in m.get("illegible", []):
            legible.remove(word)
        keys = ["all", f"size{m['size']}", "size>=20" if m["size"] >= 20 else "size<20", f"rot{m['angle']}",
                f"blur{m['blur']}", "low_contrast" if m["low_contrast"] else "contrast",
                "perspective" if m["perspective"] else "flat", m["font"]]
        if m["size"] >= 20 and not m["low_contrast"]:
            keys.append("size>=20,contrast")
        # Every bucket twice: all rendered words, and only the legible ones (see hidden_words).
        for prefix, truth in (("", rec["truth"]), ("legible ", legible)):
            hits = word_hits(truth, text)
            for k in keys:
                b = buckets.setdefault(prefix + k, [0, 0])
                b[0] += hits
                b[1] += len(truth)
    notext = [rec for rec in runs["photos"] if rec["file"] not in LEGIBLE]
    false = {rec["file"]: reading(rec).text for rec in notext if reading(rec)}
    true = {rec["file"]: reading(rec).text for rec in runs["photos"] if rec["file"] in LEGIBLE}
    quoted = {rec["file"]: (word_hits(rec["truth"], reading(rec).text), len(rec["truth"]), reading(rec).text)
              for rec in runs.get("quoted", [])}
    if quoted:
        buckets["quoted photos"] = [sum(q[0] for q in quoted.values()), sum(q[1] for q in quoted.values())]
    return {"acc": {k: h / max(t, 1) for k, (h, t) in buckets.items()}, "quoted": quoted,
            "words": {k: t for k, (_, t) in buckets.items()},
            "false_rate": len(false) / max(len(notext), 1), "false": false, "photos": len(notext), "legible": true}


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--synthetic", type=int, default=160)
    ap.add_argument("--photos", type=int, default=240)
    ap.add_argument("--det-side", type=int, default=ReadOptions.det_side)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="/tmp/edgecap-text-eval")
    ap.add_argument("--save-examples", action="store_true", help="write the first 12 synthetic images to --cache")
    ap.add_argument("--max-false", type=float, default=0.02,
                    help="operating point: the best accuracy whose false-text rate is at most this")
    ap.add_argument("--slack", type=float, default=0.5, help="accuracy points given up for a stricter filter")
    ap.add_argument("--only", choices=["synthetic", "photos", "quoted"], help="just read (and cache) one set, e.g. to "
                    "run the two sets in two processes")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="another ReadOptions field for the reader (repeatable), e.g. --option rescue_score=0")
    args = ap.parse_args()
    args.reader_options = {k: _value(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.only:
        collect(args, args.only)
        return 0
    runs = {part: collect(args, part) for part in ("synthetic", "photos", "quoted")}

    print(f"det_side {args.det_side}: {len(runs['synthetic'])} synthetic images "
          f"({sum(len(r['truth']) for r in runs['synthetic'])} words), {len(runs['photos'])} val photos whose captions "
          f"mention no writing, {len(LEGIBLE)} of them with legible text all the same (checked by eye)")
    print(f"{'min_score':>9} {'chars':>5} {'scripts':>7} | {'false%':>6} | {'acc>=20':>7} {'acc12':>6} {'acc16':>6} "
          f"{'all':>6} | legible: {'>=20':>5} {'12':>5}")
    table = []
    for scripts in (("latin",), tuple(SCRIPTS)):
        for chars in (1, 2, 3, 4):
            for min_score in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
                opt = ReadOptions(min_score=min_score, min_chars=chars, scripts=scripts)
                s = score(runs, opt)
                table.append((opt, s))
                a = s["acc"]
                print(f"{min_score:9.2f} {chars:5d} {'latin' if len(scripts) == 1 else 'any':>7} | "
                      f"{100 * s['false_rate']:6.1f} | {100 * a.get('size>=20', 0):7.1f} "
                      f"{100 * a.get('size12', 0):6.1f} "
                      f"{100 * a.get('size16', 0):6.1f} {100 * a['all']:6.1f} | {'':9}"
                      f"{100 * a.get('legible size>=20', 0):5.1f} {100 * a.get('legible size12', 0):5.1f}")
    # Among settings with false text <= max_false and accuracy within --slack of the best such (one
    # word either way is noise): the least false text, then the highest score threshold, then
    # the fewest characters (short lines such as "NO" or a bus number are worth keeping).
    ok = [(o, s) for o, s in table if s["false_rate"] <= args.max_false]
    top = max(s["acc"]["all"] for _, s in ok)
    near = [(o, s) for o, s in ok if s["acc"]["all"] >= top - args.slack / 100]
    best_opt, best = max(near, key=lambda os_: (-os_[1]["false_rate"], os_[0].min_score, -os_[0].min_chars,
                                                -len(os_[0].scripts)))
    print(f"\noperating point (false text <= {100 * args.max_false:.0f}%, overall word accuracy within "
          f"{args.slack} points of the best such, {100 * top:.1f}%; then the least false text, the highest score "
          f"threshold, the fewest characters): "
          f"min_score={best_opt.min_score} min_chars={best_opt.min_chars} scripts={','.join(best_opt.scripts)}")
    for k in sorted(best["acc"]):
        print(f"  {k:>20}: {100 * best['acc'][k]:5.1f}% of {best['words'][k]} words")
    print(f"  false text on {best['photos']} photos without legible text: {100 * best['false_rate']:.1f}% "
          f"{best['false']}")
    print(f"  photos with legible text the captions do not mention ({len(LEGIBLE)}): {best['legible']}")
    current = score(runs, ReadOptions())
    print(f"shipped defaults ({ReadOptions().min_score}, {ReadOptions().min_chars}): acc>=20 "
          f"{100 * current['acc'].get('size>=20', 0):.1f}% acc12 {100 * current['acc'].get('size12', 0):.1f}% "
          f"false {100 * current['false_rate']:.1f}% {current['false']}; legible words only: acc>=20 "
          f"{100 * current['acc'].get('legible size>=20', 0):.1f}% acc12 {100 * current['acc'].get('legible size12', 0):.1f}%")
    print(f"  photos with legible text: {current['legible']}")
    q = current["quoted"]
    print(f"  real photos whose captions quote their text ({len(q)}): "
          f"{100 * current['acc'].get('quoted photos', 0):.1f}% of {sum(v[1] for v in q.values())} quoted words read")
    for name, (hits, total, text) in sorted(q.items()):
        print(f"    {hits}/{total} {name}: {text!r}")

    def med(rows, key):
        return float(np.median([r[key] for r in rows])) if rows else float("nan")

    texty = [r for r in runs["synthetic"] if r["regions"]]
    empty = [r for r in runs["photos"] if not r["regions"]]
    regions = [r for r in runs["photos"] if r["regions"]]
    print(f"\ntime per image (median wall s / CPU s): with text {med(texty, 'wall'):.2f}/{med(texty, 'cpu'):.2f} "
          f"(n={len(texty)}); photos where the detector finds nothing {med(empty, 'wall'):.2f}/{med(empty, 'cpu'):.2f} "
          f"(n={len(empty)}); photos with some region {med(regions, 'wall'):.2f}/{med(regions, 'cpu'):.2f} "
          f"(n={len(regions)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
