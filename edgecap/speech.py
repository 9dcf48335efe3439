"""Speaking text aloud: pyttsx3 (espeak-ng on Linux) or the espeak-ng program, killable.

Speech runs in a child process so that a hung engine (pyttsx3's runAndWait is known
to block on some platforms) can always be stopped. `SpeechWorker` says one thing at a
time on its own thread, so capture and captioning never wait for the voice.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol


ENGINES = ("pyttsx3", "espeak", "none")


class SpeechError(Exception):
    pass


def espeak_binary() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


def pyttsx3_available() -> bool:
    try:
        import pyttsx3  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return espeak_binary() is not None or sys.platform in ("darwin", "win32")


def pick_engine(requested: str = "auto") -> str:
    if requested not in ("auto", *ENGINES):
        raise SpeechError(f"unknown speech engine {requested!r} (choose from auto, {', '.join(ENGINES)})")
    if requested == "auto":
        if pyttsx3_available():
            return "pyttsx3"
        return "espeak" if espeak_binary() else "none"
    if requested == "pyttsx3" and not pyttsx3_available():
        raise SpeechError("pyttsx3 has no speech engine here (on Linux install espeak-ng)")
    if requested == "espeak" and not espeak_binary():
        raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng)")
    return requested


_PYTTSX3_CHILD = """
import sys, pyttsx3
text, rate, wav = sys.argv[1], int(sys.argv[2]), sys.argv[3]
engine = pyttsx3.init()
engine.setProperty("rate", rate)
if wav:
    engine.save_to_file(text, wav)
else:
    engine.say(text)
engine.runAndWait()
"""


def speech_command(text: str, engine: str, rate: int = 175, wav: str | Path | None = None) -> list[str]:
    """The child-process command that speaks text (or writes it to a WAV file)."""
    if engine == "pyttsx3":
        return [sys.executable, "-c", _PYTTSX3_CHILD, text, str(rate), str(wav or "")]
    if engine == "espeak":
        binary = espeak_binary()
        if binary is None:
            raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng)")
        cmd = [binary, "-s", str(rate)]
        if wav:
            cmd += ["-w", str(wav)]
        return cmd + ["--", text]
    raise SpeechError(f"engine {engine!r} cannot speak")


def speak(text: str, engine: str = "auto", rate: int = 175, wav: str | Path | None = None,
          timeout: float = 30.0) -> bool:
    """Speak (or write a WAV) and wait. Returns False (text-only) when the engine is "none";
    raises SpeechError when the engine fails, hangs or returns too soon to have played it."""
    engine = pick_engine(engine)
    if engine == "none":
        return False
    started = time.monotonic()
    proc = subprocess.Popen(speech_command(text, engine, rate, wav), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise SpeechError(f"speech engine {engine} hung for {timeout:.0f} s and was stopped") from None
    if proc.returncode != 0:
        why = next(iter(err.decode(errors="replace").strip().splitlines()[-1:]), f"exit status {proc.returncode}")
        raise SpeechError(f"speech engine {engine} failed: {why}")
    if wav is None:
        too_soon = returned_too_soon(text, rate, time.monotonic() - started)
        if too_soon:
            raise SpeechError(f"speech engine {engine} {too_soon}")
    elif not Path(wav).is_file() or Path(wav).stat().st_size <= 44:
        raise SpeechError(f"speech engine {engine} wrote no audio to {wav}")
    return True


def spoken_seconds(text: str, rate: int) -> float:
    """About how long text takes to say at rate words per minute."""
    return len(text.split()) * 60.0 / max(rate, 1)


def returned_too_soon(text: str, rate: int, seconds: float) -> str | None:
    """Engines with no audio device often exit at once with status 0: an utterance that
    should take 2 s and "finished" in 0.02 s was not heard. Returns why, or None."""
    expected = spoken_seconds(text, rate)
    if expected >= 0.8 and seconds < 0.25 * expected:
        return (f"returned after {seconds:.2f} s for a {expected:.1f} s sentence: "
                "no audio was played (is there an output device?)")
    return None


# --- saying the same thing twice -------------------------------------------------------
_STOPWORDS = frozenset("""a an the this that these those there here is are was were be been being has have
had it its of in on at to from by with and or but as into onto over under near next for up out some
very while his her their they he she them one""".split())
# A few caption synonyms, so "a dog on a couch" and "a dog on the sofa" count as one thing.
_SYNONYMS = {"couch": "sofa", "puppy": "dog", "kitten": "cat", "automobile": "car", "bicycle": "bike",
             "men": "man", "women": "woman", "people": "person", "persons": "person", "children": "child",
             "kids": "child", "kid": "child", "lying": "lie", "laying": "lie", "sitting": "sit", "sits": "sit",
             "standing": "stand", "stands": "stand", "photo": "picture", "image": "picture"}

# Two captions whose content-word Jaccard similarity reaches this are "the same thing".
# 0.7 means: with three content words the sets must match (one extra adjective, 3/4,
# still counts as a repeat); with five, one swapped word (4/6 = 0.67, "a man riding a
# bike / horse down a street") is news and is spoken. Missing a real change is worse for
# the listener than hearing a near repeat, so the threshold sits above that case.
REPEAT_THRESHOLD = 0.7


def _lemma(word: str) -> str:
    word = _SYNONYMS.get(word, word)
    for suffix, replacement, min_len in (("ies", "y", 5), ("ing", "", 6), ("ed", "", 5), ("es", "", 5),
                                         ("s", "", 4)):
        if word.endswith(suffix) and len(word) >= min_len and not word.endswith("ss"):
            return _SYNONYMS.get(word[:-len(suffix)] + replacement, word[:-len(suffix)] + replacement)
    return word


def content_words(text: str) -> frozenset[str]:
    """Lower-case words minus function words, crudely lemmatised ("dogs sitting" -> dog, sit)."""
    return frozenset(_lemma(w) for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOPWORDS and len(w) > 1)


def text_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the content words of two sentences (1.0 for two empty ones)."""
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return 1.0 if a.strip().lower() == b.strip().lower() else 0.0
    return len(wa & wb) / len(wa | wb)


def near_duplicate(a: str, b: str, threshold: float = REPEAT_THRESHOLD) -> bool:
    return text_similarity(a, b) >= threshold


# --- voices ------------------------------------------------------------------------------
class Playback(Protocol):
    def poll(self) -> int | None: ...  # None while still speaking, else the exit status
    def kill(self) -> None: ...


class ChildProcess:
    """A speech child in its own process group, so kill() also takes its children."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()


class _Finished:
    def poll(self) -> int:
        return 0

    def kill(self) -> None:
        pass


class ProcessVoice:
    """pyttsx3 or espeak-ng in a child process; writes WAV files instead when given a path."""

    writes_wav = True
    plays_audio = True  # an utterance that ends far too soon was not heard (see returned_too_soon)

    def __init__(self, engine: str):
        self.name = engine

    def start(self, text: str, rate: int, wav: Path | None = None) -> Playback:
        return ChildProcess(speech_command(text, self.name, rate, wav))


class TextVoice:
    """No engine: the printed line is all there is."""

    name = "none"
    writes_wav = False

    def start(self, text: str, rate: int, wav: Path | None = None) -> Playback:
        return _Finished()


def make_voice(requested: str = "auto"):
    engine = pick_engine(requested)
    return TextVoice() if engine == "none" else ProcessVoice(engine)


# --- the speech worker -----------------------------------------------------------------------
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


# The output check lives in its own module; it is part of this one's interface.
from edgecap.speech_output import OutputCheck, audio_output_device, check_output  # noqa: E402,F401
