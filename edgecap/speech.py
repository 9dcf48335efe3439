"""Speaking text aloud: pyttsx3 (espeak-ng on Linux) or the espeak-ng program, killable.

Speech runs in a child process so that a hung engine (pyttsx3's runAndWait is known
to block on some platforms) can always be stopped.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
    """Speak and wait. Returns False (text-only) when no engine exists."""
    engine = pick_engine(engine)
    if engine == "none":
        return False
    proc = subprocess.Popen(speech_command(text, engine, rate, wav), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise SpeechError(f"speech engine {engine} hung for {timeout:.0f} s and was stopped") from None
    return proc.returncode == 0
