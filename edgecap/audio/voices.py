"""Voices: pyttsx3 (espeak-ng on Linux) or the espeak-ng program, each in a killable child process.

Speech runs in a child process so that a hung engine (pyttsx3's runAndWait is known to block on
some platforms) can always be stopped. `speak` says one thing and waits; the voices here are
what `edgecap.audio.speech.SpeechWorker` plays one at a time.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol


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
