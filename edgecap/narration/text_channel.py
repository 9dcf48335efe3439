"""Narration's text channel: read new text aloud when it comes into view, not again while it stays.

The narrator's main loop calls observe() with every frame; that only compares a thumbnail with
the last one (well under a millisecond). When the view has held still for `settle_seconds`,
the frame goes to a reader thread (a newer settled frame replaces one still waiting), so
neither capture nor the main loop ever waits for OCR. Lines read recently are remembered: a
label that stays in view is said once; it is said again only after it has been out of sight
for `forget_seconds`. read_now() (the "read" command) says everything in the current frame.
"""
from __future__ import annotations

import difflib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from edgecap.vision.read_aloud import NO_TEXT, spoken_blocks
from edgecap.vision.reading import Reading, ReadOptions, shared_reader
from edgecap.vision.reading_order import TextBlock, TextLine

log = logging.getLogger("edgecap")


@dataclass(frozen=True)
class TextChannelOptions:
    settle_seconds: float = 0.5  # the view must hold this still this long before it is read
    still_change: float = 4.0  # mean grey-level change (0-255) between thumbnails that still counts as still
    reread_seconds: float = 4.0  # a view that stays still is read again this often (a page turned slowly)
    forget_seconds: float = 10.0  # text out of sight this long is new again when it comes back
    same_text: float = 0.75  # character similarity at which two readings of a line are the same line


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


class TextMemory:
    """Which lines were said recently (by similarity, since OCR of one label varies a little)."""

    def __init__(self, options: TextChannelOptions):
        self.options = options
        self._seen: dict[str, float] = {}  # line key -> last time it was in view

    def new_lines(self, lines: tuple[TextLine, ...], t: float) -> list[TextLine]:
        o = self.options
        self._seen = {k: seen for k, seen in self._seen.items() if t - seen <= o.forget_seconds}
        fresh = []
        for line in lines:
            key = _key(line.text)
            match = next((k for k in self._seen
                          if difflib.SequenceMatcher(None, k, key).ratio() >= o.same_text), None)
            if match is None:
                fresh.append(line)
            else:
                del self._seen[match]
            self._seen[key] = t
        return fresh


Say = Callable[..., str]  # SpeechWorker.say(text, kind, t, force=...)
Log = Callable[..., None]  # EventLog(kind, text, t, **fields)


class TextChannel:
    def __init__(self, say: Say, log_event: Log, options: TextChannelOptions = TextChannelOptions(),
                 read_options: ReadOptions = ReadOptions(), reader=None):
        self.say = say
        self.log = log_event
        self.options = options
        self.read_options = read_options
        self._reader = reader
        self.memory = TextMemory(options)
        self._thumb: np.ndarray | None = None
        self._still_since = 0.0
        self._last_read_t = -1e9
        self._cond = threading.Condition()
        self._job: tuple[np.ndarray, float, bool] | None = None
        self._busy = False
        self._closing = False
        self.reads = 0
        self._thread = threading.Thread(target=self._run, name="edgecap-text", daemon=True)
        self._thread.start()

    # --- main loop side (cheap) ----------------------------------------------------------------
    def observe(self, rgb: np.ndarray, t: float) -> None:
        thumb = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (64, 48), interpolation=cv2.INTER_AREA)
        thumb = thumb.astype(np.float32)
        moved = self._thumb is None or float(np.abs(thumb - self._thumb).mean()) > self.options.still_change
        self._thumb = thumb
        if moved:  # stillness counts from here
            self._still_since, self._last_read_t = t, -1e9
            return
        settled = t - self._still_since >= self.options.settle_seconds
        if settled and t - self._last_read_t >= self.options.reread_seconds:
            self._last_read_t = t
            self._submit(rgb, t, full=False)

    def read_now(self, rgb: np.ndarray | None, t: float) -> None:
        if rgb is None:
            self.say("No picture yet.", "cue", t, force=True)
            return
        self._submit(rgb, t, full=True)

    def _submit(self, rgb: np.ndarray, t: float, full: bool) -> None:
        with self._cond:
            if self._job is not None and self._job[2] and not full:
                return  # a waiting "read" command outranks a routine look
            self._job = (rgb.copy(), t, full)
            self._cond.notify_all()

    def idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is waiting or being read (for tests and the end of a file)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._job is not None or self._busy:
                if not self._cond.wait(max(0.0, end - time.monotonic())):
                    return False
        return True

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    # --- the reader thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                rgb, t, full = self._job
                self._job, self._busy = None, True
            try:
                self._read(rgb, t, full)
            except Exception as exc:  # noqa: BLE001 - a failed read must not end the channel
                log.exception("text reading failed")
                self.log("fault", f"text reading failed: {type(exc).__name__}: {exc}", t, source="text")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _read(self, rgb: np.ndarray, t: float, full: bool) -> None:
        if self._reader is None:
            self._reader = shared_reader(self.read_options)
        reading: Reading = self._reader.read(rgb)
        self.reads += 1
        fresh = self.memory.new_lines(reading.lines, t)
        if full:
            texts = spoken_blocks(reading) or [NO_TEXT]
        else:
            if not fresh:
                self.log("scene", "no new text", t, channel="text", lines=len(reading.lines), ms=round(reading.ms))
                return
            blocks = (TextBlock(tuple(ln for ln in b.lines if ln in fresh)) for b in reading.blocks)
            texts = spoken_blocks(Reading(tuple(b for b in blocks if b.lines)))
        text = " ".join(texts)
        status = self.say(text, "caption", t, force=True)
        self.log("caption", text, t, channel="text", speech=status, full=full or None, ms=round(reading.ms))
