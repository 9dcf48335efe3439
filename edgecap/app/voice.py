"""Who speaks: edgecap's own voice, or the user's screen reader.

Both go through one `edgecap.audio.speech.SpeechWorker`, so repeats are dropped, "stop" cuts
speech off and live captions replace stale ones the same way in either case. Only the
last step differs: a child process that speaks, or an announcement handed to the GUI
thread, which passes it to the screen reader (QAccessibleAnnouncementEvent: AT-SPI on
Linux, UI Automation on Windows, NSAccessibility on macOS).
"""
from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from edgecap.audio.speech import SpeechWorker
from edgecap.audio.speech_output import check_output
from edgecap.audio.voices import SpeechError, make_voice

log = logging.getLogger("edgecap")


class _Said:
    """The playback of an announcement: the screen reader has it, nothing to wait for."""

    def poll(self) -> int:
        return 0

    def kill(self) -> None:
        pass


class RoutedVoice(QObject):
    """A speech-worker voice that speaks itself or asks the GUI to announce."""

    announce = Signal(str)  # emitted on the speech thread, delivered on the GUI thread
    writes_wav = False

    def __init__(self, own, speaker: str):
        super().__init__()
        self.own = own
        self.speaker = speaker

    @property
    def name(self) -> str:
        return "screen reader" if self.through_reader else self.own.name

    @property
    def through_reader(self) -> bool:
        # With no engine installed, the screen reader is the only voice left.
        return self.speaker == "screen_reader" or self.own.name == "none"

    def start(self, text: str, rate: int, wav=None):
        if self.through_reader:
            self.announce.emit(text)
            return _Said()
        return self.own.start(text, rate, None)


def open_voice(engine: str, speaker: str) -> tuple[RoutedVoice, str | None]:
    """The voice and, when edgecap cannot speak itself, one line saying why."""
    problem = None
    try:
        own = make_voice(engine)
    except SpeechError as exc:
        own, problem = make_voice("none"), str(exc)
    if problem is None and own.name == "none" and engine != "none":
        problem = "No speech engine found (install espeak-ng)"
    if problem is None and own.name != "none":
        try:
            verdict = check_output(own.name, synthesize=False)
            if not verdict.ok:
                problem = verdict.reason or f"{own.name} cannot play sound here"
        except SpeechError as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken check must not stop the app
            problem = f"speech check failed: {exc}"
    if problem and speaker == "edgecap":
        problem += "; speaking through the screen reader instead"
        own = make_voice("none")
    return RoutedVoice(own, speaker), problem


def open_speech(engine: str, speaker: str, rate: int, echo=None) -> tuple[SpeechWorker, RoutedVoice, str | None]:
    voice, problem = open_voice(engine, speaker)
    worker = SpeechWorker(voice, rate=rate, replace_pending=True, echo=echo)
    return worker, voice, problem
