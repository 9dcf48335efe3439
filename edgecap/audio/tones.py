"""The light channel's sound: brightness as pitch, short sine tones, played one at a time."""
from __future__ import annotations

import io
import shutil
import tempfile
import wave
from pathlib import Path

import numpy as np

from edgecap.audio.voices import ChildProcess


def brightness_to_pitch(brightness: float, low_hz: float = 200.0, octaves: float = 3.0) -> float:
    """Mean luminance 0-255 to a tone: 200 Hz for black up to 1600 Hz for white (log scale,
    so equal steps of light sound like equal musical steps)."""
    return float(low_hz * 2.0 ** (octaves * np.clip(brightness / 255.0, 0.0, 1.0)))


TONE_RATE = 22050


def sine_tone(freq: float, seconds: float = 0.15, volume: float = 0.3, rate: int = TONE_RATE) -> np.ndarray:
    """int16 samples of a sine with 10 ms fades, so consecutive tones do not click."""
    n = max(1, int(seconds * rate))
    wave_ = np.sin(2 * np.pi * freq * np.arange(n) / rate) * volume
    fade = min(n // 2, int(0.01 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave_[:fade] *= ramp
        wave_[-fade:] *= ramp[::-1]
    return (wave_ * 32767).astype(np.int16)


def wav_bytes(samples: np.ndarray, rate: int = TONE_RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    return buf.getvalue()


def audio_player() -> list[str] | None:
    """A command that plays a WAV file given as its last argument, or None."""
    for binary, args in (("paplay", []), ("aplay", ["-q"]), ("play", ["-q"])):
        path = shutil.which(binary)
        if path:
            return [path, *args]
    return None


class TonePlayer:
    """Plays one short tone at a time in a killable child; a new tone cuts the old one off.

    With `wav_dir` every tone is written there instead; with no player it only reports.
    """

    def __init__(self, wav_dir: str | Path | None = None, player: list[str] | None = None):
        self.wav_dir = Path(wav_dir) if wav_dir else None
        if self.wav_dir:
            self.wav_dir.mkdir(parents=True, exist_ok=True)
        self.player = player if player is not None else audio_player()
        self._tmp = tempfile.TemporaryDirectory(prefix="edgecap-tones-")
        self._current: ChildProcess | None = None
        self._count = 0

    @property
    def mode(self) -> str:
        return "wav" if self.wav_dir else "play" if self.player else "log"

    def play(self, freq: float, seconds: float = 0.15) -> Path | None:
        """Start the tone; returns the WAV file written (wav mode) or None."""
        self._count += 1
        data = wav_bytes(sine_tone(freq, seconds))
        if self.wav_dir:
            path = self.wav_dir / f"tone-{self._count:05d}-{round(freq)}hz.wav"
            path.write_bytes(data)
            return path
        if self.player:
            self.stop()
            path = Path(self._tmp.name) / f"tone{self._count % 2}.wav"
            path.write_bytes(data)
            try:
                self._current = ChildProcess([*self.player, str(path)])
            except OSError:
                self.player = None
        return None

    def stop(self) -> None:
        if self._current is not None:
            self._current.kill()
            self._current = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()
