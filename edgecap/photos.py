"""`edgecap caption`: each photo read, described, reported and freed on its own.

One bad file never stops the others: it gets a one-line error naming it (and a record
with status "error" under --json). Names are printed escaped, so a newline or a byte
that is not UTF-8 in a file name can neither fake an output line nor abort the run.
Speech is checked before the model loads: asked to speak where nothing can be heard,
the command says so and exits 2 instead of succeeding in silence.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edgecap.caption import describer_for
from edgecap.core.image import INCOMPLETE_MESSAGE, ImageError, ImageIncomplete, display_name, read_image

UNREADABLE_SPOKEN = "This file could not be read."


class SpeechSetupError(Exception):
    """--speak / --speak-to cannot work here; one line for the user."""


class Voice:
    """What --speak and --speak-to do with each line: say it now, and/or collect it for one WAV."""

    def __init__(self, args):
        from edgecap.audio.speech_output import check_output
        from edgecap.audio.voices import pick_engine

        self.speak, self.wav = args.speak, args.speak_to
        self.engine, self.failed, self.lines = "none", False, []
        if not (self.speak or self.wav):
            return
        if args.speech == "none":
            raise SpeechSetupError(f"{'--speak' if self.speak else '--speak-to'} needs a voice, "
                                   "but --speech none turns speech off")
        if self.speak:
            check = check_output(args.speech)
            if not check.ok:
                raise SpeechSetupError(f"cannot speak: {check.reason} (--speak-to FILE.wav writes the speech "
                                       "to a file instead)")
            self.engine = check.engine
        else:
            self.engine = pick_engine(args.speech)
            if self.engine == "none":
                raise SpeechSetupError("--speak-to needs a speech engine; none is installed (install espeak-ng)")
        if self.wav and not Path(self.wav).parent.is_dir():
            raise SpeechSetupError(f"--speak-to {display_name(self.wav)}: its folder does not exist")

    def say(self, text: str) -> None:
        from edgecap.audio.voices import SpeechError, speak

        if self.wav:
            self.lines.append(text)
        if not self.speak or self.failed:
            return
        try:
            speak(text, self.engine)
        except SpeechError as exc:
            self.failed = True  # said once; the captions are still printed
            print(f"edgecap: error: speech failed, the rest is printed only: {exc}", file=sys.stderr, flush=True)

    def finish(self) -> bool:
        """Write the collected speech to the --speak-to file; False (after an error line) on failure."""
        from edgecap.audio.voices import SpeechError, speak

        if not self.wav:
            return not self.failed
        try:
            speak("\n".join(self.lines) or "Nothing to say.", self.engine, wav=self.wav, timeout=120.0)
        except SpeechError as exc:
            print(f"edgecap: error: {display_name(self.wav)}: {exc}", file=sys.stderr, flush=True)
            return False
        return not self.failed


def describe_file(captioner, path: str, options, read_text=None) -> dict:
    """One photo -> {path, caption (as said), confidence, objects, faces, tokens, ms, status[, message][, text]};
    never raises for a bad file."""
    name = display_name(path)
    start = time.perf_counter()
    record: dict = {"path": name, "caption": None, "tokens": [], "ms": 0.0, "status": "error"}
    try:
        image = read_image(path)
        result = describer_for(captioner).describe([image], options, read_text)[0]
        if result.caption.strip():
            record.update(result.to_json())
        else:
            record["message"] = f"{name}: the model produced no words; nothing to say"
        del image  # freed before the next file is read
    except ImageIncomplete as exc:
        record.update(caption=INCOMPLETE_MESSAGE, status="incomplete", message=str(exc))
    except ImageError as exc:
        record["message"] = str(exc)
    except MemoryError:
        record["message"] = f"{name}: out of memory while describing it"
    except Exception as exc:  # noqa: BLE001 - one photo's failure must not stop the others
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        record["message"] = f"{name}: describing failed ({type(exc).__name__}: {first})"
    record["ms"] = round((time.perf_counter() - start) * 1000, 2)
    return record


def caption_files(args, captioner, options, voice: Voice) -> int:
    """Print (or collect as JSON) one record per path; 1 when any file was not described."""
    records, code = [], 0
    read_text = None
    if getattr(args, "read_text", False):
        from edgecap.vision.read_aloud import caption_text_reader

        read_text = caption_text_reader(captioner.threads)
    for path in args.paths:
        record = describe_file(captioner, path, options, read_text)
        if record["status"] in ("error", "incomplete"):
            code = 1
            print(f"edgecap: error: {record['message']}", file=sys.stderr, flush=True)
        if record["caption"] is not None and not args.json:
            line = record["caption"] if len(args.paths) == 1 else f"{record['path']}: {record['caption']}"
            print(line, flush=True)
        voice.say(record["caption"] or UNREADABLE_SPOKEN)
        records.append(record)
    if args.json:
        print(json.dumps(records, indent=2), flush=True)
    if not voice.finish():
        code = 1
    return code
