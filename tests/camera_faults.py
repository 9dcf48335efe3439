"""Camera faults injected into a frame source, for the tests and bench/soak.py (not run-time code).

Tests import it as `camera_faults` (pytest puts tests/ on sys.path); bench/soak.py puts tests/ there itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecap.narration.frames import Frame, FrameSource


@dataclass(frozen=True)
class Faults:
    """Stretches of the timeline (start, end) in seconds where a FaultySource misbehaves."""
    drops: tuple[tuple[float, float], ...] = ()  # no frames at all: an unplugged camera
    dark: tuple[tuple[float, float], ...] = ()  # a hand over the lens
    corrupt: tuple[tuple[float, float], ...] = ()  # every frame undecodable
    period: float = 0.0  # > 0: the stretches repeat with this period (soak tests)


class FaultySource(FrameSource):
    """Injects camera faults into another source, for tests and soak runs."""

    def __init__(self, inner: FrameSource, faults: Faults, seed: int = 0):
        self.inner, self.faults = inner, faults
        self.name, self.fps, self.live = inner.name, inner.fps, inner.live
        self.rng = np.random.default_rng(seed)
        self.injected = {"drops": 0, "dark": 0, "corrupt": 0}

    def _inside(self, stretches, t: float) -> bool:
        if self.faults.period > 0:
            t = t % self.faults.period
        return any(start <= t < end for start, end in stretches)

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None or frame.rgb is None:
            return frame
        if self._inside(self.faults.drops, frame.t):
            self.injected["drops"] += 1
            return Frame(None, frame.t, frame.index, frame.wall, "missing")
        if self._inside(self.faults.corrupt, frame.t):
            self.injected["corrupt"] += 1
            # What a broken decoder hands over: a truncated buffer, not a picture.
            return Frame(frame.rgb.reshape(-1)[:1000].copy(), frame.t, frame.index, frame.wall)
        if self._inside(self.faults.dark, frame.t):
            self.injected["dark"] += 1
            noise = self.rng.normal(0.0, 2.0, frame.rgb.shape)
            dark = np.clip(frame.rgb * 0.03 + noise, 0, 255).astype(np.uint8)
            return Frame(dark, frame.t, frame.index, frame.wall)
        return frame

    def reopen(self) -> bool:
        return self.inner.reopen()

    def close(self) -> None:
        self.inner.close()
