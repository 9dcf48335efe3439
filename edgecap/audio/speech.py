"""Speaking captions aloud, one at a time, on a thread of its own.

`SpeechWorker` says one thing at a time on its own thread, so capture and captioning never wait
for the voice (edgecap.audio.voices plays each utterance in a killable child process).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecap.audio.repeats import REPEAT_THRESHOLD, near_duplicate
from edgecap.audio.voices import Playback, TextVoice, returned_too_soon


@dataclass(frozen=True)
class Utterance:
    text: str
    kind: str = "caption"  # caption | cue | colour
    t: float = 0.0  # source time of what it describes
    id: int = 0


EventSink = Callable[..., None]  # (kind, text, t, **fields)


class SpeechWorker:
    """Says one utterance at a time on its own thread.

    `say()` never blocks. With `replace_pending` (live sources) a new caption replaces
    captions still waiting, so the listener hears the present, not a backlog; cues
    ("camera lost") always wait their turn. A caption too similar to the last thing said
    is dropped (see REPEAT_THRESHOLD) unless forced, as "describe now" and "repeat" are.
    """

    RATE_STEP, MIN_RATE, MAX_RATE = 25, 80, 450
    MAX_PENDING = 64
    MAX_FAILURES = 3  # engine failures in a row before falling back to text only

    def __init__(self, voice=None, rate: int = 175, replace_pending: bool = True,
                 repeat_threshold: float = REPEAT_THRESHOLD, wav_dir: str | Path | None = None,
                 on_event: EventSink | None = None, echo: Callable[[Utterance], None] | None = None,
                 timeout: float = 30.0):
        self.voice = voice or TextVoice()
        self.rate = rate
        self.replace_pending = replace_pending
        self.repeat_threshold = repeat_threshold
        self.wav_dir = Path(wav_dir) if wav_dir else None
        if self.wav_dir:
            self.wav_dir.mkdir(parents=True, exist_ok=True)
        self.on_event = on_event or (lambda *a, **k: None)
        self.echo = echo
        self.timeout = timeout
        self.muted = False
        self.spoken = 0
        self._cond = threading.Condition()
        self._pending: list[Utterance] = []
        self._current: tuple[Utterance, Playback] | None = None
        self._interrupted = False
        self._last_said: str | None = None
        self._last_caption: Utterance | None = None
        self._next_id = 1
        self._failures = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="edgecap-speech", daemon=True)
        self._thread.start()

    # --- called from any thread ---------------------------------------------------------------
    def say(self, text: str, kind: str = "caption", t: float = 0.0, force: bool = False) -> str:
        """'queued', 'suppressed' (a near repeat), 'muted' or 'empty'."""
        text = text.strip()
        if not text:
            return "empty"
        with self._cond:
            if self.muted:
                return "muted"
            if not force and self._last_said is not None and near_duplicate(text, self._last_said,
                                                                           self.repeat_threshold):
                return "suppressed"
            utterance = Utterance(text, kind, t, self._next_id)
            self._next_id += 1
            if self.replace_pending and kind != "cue":
                for old in [u for u in self._pending if u.kind != "cue"]:
                    self._pending.remove(old)
                    self.on_event("speech", old.text, old.t, state="replaced", utterance=old.id)
            if len(self._pending) >= self.MAX_PENDING:
                self._pending.pop(0)
            self._pending.append(utterance)
            self._last_said = text
            if kind == "caption":
                self._last_caption = utterance
            self._cond.notify_all()
        return "queued"

    def repeat(self, t: float = 0.0) -> str:
        last = self._last_caption
        if last is None:
            return self.say("Nothing described yet.", "cue", t, force=True)
        return self.say(last.text, "caption", t, force=True)

    def stop(self) -> None:
        """Silence now: the current utterance is cut off and nothing queued is said."""
        with self._cond:
            self._pending.clear()
            self._interrupt()

    def mute(self) -> None:
        with self._cond:
            self.muted = True
            self.stop()

    def unmute(self) -> None:
        with self._cond:
            self.muted = False

    def faster(self) -> int:
        self.rate = min(self.MAX_RATE, self.rate + self.RATE_STEP)
        return self.rate

    def slower(self) -> int:
        self.rate = max(self.MIN_RATE, self.rate - self.RATE_STEP)
        return self.rate

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._pending) or self._current is not None

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been said; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._current is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)
        return True

    def close(self, drain_timeout: float = 0.0) -> None:
        if drain_timeout > 0:
            self.drain(drain_timeout)
        with self._cond:
            self._closing = True
            self._pending.clear()
            self._interrupt()
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _interrupt(self) -> None:
        if self._current is not None:
            self._interrupted = True
            self._current[1].kill()
        self._cond.notify_all()

    # --- the worker thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                utterance = self._pending.pop(0)
                wav = None
                if self.wav_dir is not None and getattr(self.voice, "writes_wav", False):
                    wav = self.wav_dir / f"{utterance.id:04d}-{utterance.kind}.wav"
                try:
                    playback = self.voice.start(utterance.text, self.rate, wav)
                except Exception as exc:  # noqa: BLE001 - a broken engine must not end narration
                    self._engine_failed(utterance, str(exc))
                    continue
                self._current = (utterance, playback)
                self._interrupted = False
            started = time.monotonic()
            self.on_event("speech", utterance.text, utterance.t, state="start", utterance=utterance.id,
                          said=utterance.kind, rate=self.rate, wav=str(wav) if wav else None)
            if self.echo is not None:
                self.echo(utterance)
            status = self._wait(playback)
            with self._cond:
                interrupted = self._interrupted
            state = "stopped" if interrupted else "timeout" if status is None else "done"
            self.on_event("speech", utterance.text, utterance.t, state=state, utterance=utterance.id,
                          seconds=round(time.monotonic() - started, 3))
            if state == "done":
                self.spoken += 1
                too_soon = None
                if wav is None and getattr(self.voice, "plays_audio", False):
                    too_soon = returned_too_soon(utterance.text, self.rate, time.monotonic() - started)
                if status != 0 or too_soon:
                    self._engine_failed(utterance, too_soon or f"exit status {status}")
                else:
                    self._failures = 0
            with self._cond:
                self._current = None
                self._cond.notify_all()

    def _wait(self, playback: Playback) -> int | None:
        deadline = time.monotonic() + self.timeout
        while True:
            status = playback.poll()
            if status is not None:
                return status
            if time.monotonic() > deadline:
                playback.kill()
                return None
            with self._cond:
                if self._interrupted:
                    return playback.poll()
                self._cond.wait(0.02)

    def _engine_failed(self, utterance: Utterance, why: str) -> None:
        self._failures += 1
        self.on_event("fault", f"speech engine {self.voice.name} failed: {why}", utterance.t, source="speech")
        if self._failures >= self.MAX_FAILURES and not isinstance(self.voice, TextVoice):
            self.on_event("fault", "speech engine keeps failing; text only from now on", utterance.t,
                          source="speech")
            self.voice = TextVoice()
