"""Saying what a photo's text reads: `edgecap read`, and the short clause a caption may carry.

    edgecap read sign.jpg                 # the text, blocks separated by a blank line
    edgecap read a.jpg b.jpg --json       # [{"path", "text", "lines": [{"text", "score", "box"}], ...}]
    edgecap read label.jpg --speak        # and say it, with a pause between blocks
"""
from __future__ import annotations

import json
import logging
import re
import sys

import numpy as np

from edgecap.vision.reading import Reading, ReadOptions, model_dir, scripts_for, shared_reader
from edgecap.vision.reading_order import TextLine

log = logging.getLogger("edgecap")

NO_TEXT = "No text found."
CLAUSE_WORDS = 8  # a caption carries at most this many words of what the photo says
SALIENT = 0.5  # in a caption, lines less than half as tall as the largest are the small print


def _line_height(line: TextLine) -> float:
    ys = [y for _, y in line.box]
    return max(ys) - min(ys)


def _tidy_words(text: str) -> list[str]:
    return [w for w in re.split(r"\s+", text.strip()) if w]


def caption_clause(reading: Reading, subject: str | None = None, max_words: int = CLAUSE_WORDS) -> str:
    """The words a caption adds, or "" when nothing legible was read.

    "It says: STOP." / with subject="street sign": "A street sign reading Hollywood, Sunset Blvd."
    Only the largest lines are kept (the sign, not its small print), in reading order, and the
    words are capped; a cut is said ("and more") so the listener knows there is more to read.
    """
    lines = list(reading.lines)
    if not lines:
        return ""
    tallest = max(_line_height(line) for line in lines)
    salient = [line for line in lines if _line_height(line) >= SALIENT * tallest]
    parts: list[str] = []
    used = 0
    cut = len(salient) < len(lines)
    for line in salient:
        words = _tidy_words(line.text)
        room = max_words - used
        if room <= 0:
            cut = True
            break
        if len(words) > room:
            words, cut = words[:room], True
        parts.append(" ".join(words).rstrip(",;:"))
        used += len(words)
    body = ", ".join(p for p in parts if p).rstrip(".!?,;:- ")  # "CENTRE-": a word broken at the line end
    if not body:
        return ""
    if cut:
        body += ", and more"
    return f"A {subject} reading {body}." if subject else f"It says: {body}."


def spoken_blocks(reading: Reading) -> list[str]:
    """One utterance per block (said with a pause between them); lines run on with commas."""
    out = []
    for block in reading.blocks:
        text = ", ".join(line.text.rstrip(",;") for line in block.lines)
        out.append(text if text[-1:] in ".!?" else text + ".")
    return out


def text_for_caption(rgb: np.ndarray, options: ReadOptions = ReadOptions()) -> tuple[str, Reading]:
    """(clause, reading) for one photo. Cheap when there is no text: the detector runs first and
    recognition only when it finds a region (see TextReader.recognise)."""
    reading = shared_reader(options).read(rgb)
    return caption_clause(reading), reading


def caption_text_reader(threads: int | None = 1):
    """RGB -> (clause for the caption, the text read), for `caption --read-text` and `describe --read-text`.

    Loads the OCR models now, so that a missing package or model is one error line, not one per photo.
    """
    model_dir()
    options = ReadOptions(threads=threads)  # the caller's share of the cores, as for the captioner

    def read(rgb: np.ndarray) -> tuple[str, str]:
        clause, reading = text_for_caption(rgb, options)
        return clause, reading.text

    return read


# --- the command line -------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    p = subparsers.add_parser("read", help="read the text in photos aloud",
                              description="Read the text in photos: signs, labels, letters. Offline.")
    p.add_argument("paths", nargs="+")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list with path, text, lines (text, score, box 0-1)")
    p.add_argument("--speak", action="store_true", help="also say the text aloud, a pause between blocks")
    p.add_argument("--speech", default="auto", help="auto, pyttsx3, espeak or none")
    p.add_argument("--lang", nargs="+", default=["en"], metavar="CODE",
                   help="languages expected (ISO 639-1: en, fr, de, ru, el, zh ...); decides which scripts are "
                        "kept; Latin always is")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for onnxruntime")
    p.set_defaults(func=cmd_read)


def cmd_read(args) -> int:
    from edgecap.core.image import ImageError, read_image

    for code in args.lang:
        if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?", code):
            raise ValueError(f"--lang: {code!r} is not a language code (e.g. en, de, ru)")
    reader = shared_reader(ReadOptions(scripts=scripts_for(args.lang), threads=args.threads))
    failures = 0
    records = []
    for path in args.paths:
        try:
            reading = reader.read(read_image(path))
        except ImageError as exc:
            print(f"edgecap: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        records.append({"path": path, **reading.to_dict()})
        if not args.json:
            shown = reading.text or NO_TEXT
            print(shown if len(args.paths) == 1 else f"{path}:\n{shown}\n", flush=True)
        if args.speak:
            _say(spoken_blocks(reading) or [NO_TEXT], args.speech)
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    return 1 if failures else 0


def _say(utterances: list[str], engine: str) -> None:
    from edgecap.audio.voices import SpeechError, speak

    if engine == "none":
        return
    for text in utterances:  # one call per block: the engine's start-up is the pause
        try:
            if not speak(text, engine):
                log.warning("no speech engine found (install espeak-ng); printing only")
                return
        except SpeechError as exc:
            log.warning("speech failed: %s", exc)
            return
