"""Reading a frame source on a thread of its own: the newest frame wins, a lost camera is noticed.

`Capture` runs the source's `read()` on its own thread, keeps only the newest frame for live
sources (every frame, in order, for files), skips corrupt ones, and reports through
`SourceHealth` when a camera stops delivering ("camera lost", retried with back-off, then
"camera back").
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from typing import Callable

from edgecap.narration.frames import Frame, FrameSource, usable


class SourceHealth:
    """Whether the source delivers pictures: reports "camera_lost" once, and "camera_back" once."""

    def __init__(self, lost_after: float, announce: Callable[[str, float], None]):
        self.lost_after, self.announce = lost_after, announce
        self.lost = False
        self._missing_since: float | None = None
        self._lock = threading.Lock()

    def missing(self, t: float) -> None:
        with self._lock:
            if self._missing_since is None:
                self._missing_since = t
            if t - self._missing_since >= self.lost_after:
                self._become(True, t)

    def stalled(self, t: float) -> None:
        """The source has sat inside read() for lost_after seconds."""
        with self._lock:
            self._become(True, t)

    def picture(self, t: float) -> None:
        with self._lock:
            self._missing_since = None
            self._become(False, t)

    def _become(self, lost: bool, t: float) -> None:
        if self.lost != lost:
            self.lost = lost
            self.announce("camera_lost" if lost else "camera_back", t)


END = object()  # what Capture.get() returns once a file source has ended


class Capture:
    """Reads a source on its own thread, so nothing downstream ever makes it wait.

    Corrupt frames are skipped (one fault line per second of them). A source that stops
    delivering is reported lost after `lost_after` seconds and, if live, reopened with
    back-off (retry_first, doubling up to retry_max) until pictures come back. Live sources
    keep only the newest `queue_size` frames; files wait for the reader, so none is lost.
    """

    def __init__(self, source: FrameSource, announce: Callable[[str, float], None],
                 fault: Callable[..., None], stats: Counter | None = None, queue_size: int = 8,
                 lost_after: float = 1.5, retry_first: float = 0.5, retry_max: float = 8.0):
        self.source, self.fault = source, fault
        self.stats = stats if stats is not None else Counter()
        self.health = SourceHealth(lost_after, announce)
        self.retry_first, self.retry_max = retry_first, retry_max
        self.t = 0.0  # source time of the latest read
        self._frames: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._reading = False
        self._last_read = time.monotonic()
        self._last_corrupt_log = -1e9
        self._thread = threading.Thread(target=self._run, name="edgecap-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def get(self, timeout: float = 0.1):
        """The next Frame, END, or None when nothing came within timeout."""
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            if self.source.live and self._reading and time.monotonic() - self._last_read >= self.health.lost_after:
                self.health.stalled(self.t + time.monotonic() - self._last_read)
            return None

    def _run(self) -> None:
        delay = self.retry_first
        try:
            while not self._stop.is_set():
                self._reading = True
                try:
                    frame = self.source.read()
                except Exception as exc:  # noqa: BLE001 - a driver error is a missing frame
                    self.fault(f"frame source error: {exc}", self.t, source="capture")
                    frame = Frame(None, self.t + 0.05, -1, problem="missing")
                    time.sleep(0.05)
                finally:
                    self._reading = False
                    self._last_read = time.monotonic()
                if frame is None:
                    break
                self.t = frame.t
                self.stats["frames_read"] += 1
                if frame.rgb is None and frame.problem != "corrupt":
                    self.stats["frames_missing"] += 1
                    self.health.missing(frame.t)
                    if self.health.lost and self.source.live:
                        if self._stop.wait(delay):
                            break
                        self.source.reopen()
                        delay = min(2 * delay, self.retry_max)
                    continue
                if not usable(frame.rgb):
                    self.stats["frames_corrupt"] += 1
                    if frame.t - self._last_corrupt_log >= 1.0:
                        self._last_corrupt_log = frame.t
                        self.fault("corrupt frame skipped", frame.t, source="capture", index=frame.index)
                    continue
                delay = self.retry_first
                self.health.picture(frame.t)
                self._deliver(frame)
        finally:
            self._deliver(END, always=True)

    def _deliver(self, item, always: bool = False) -> None:
        """`always` is for END, which must get in even when nobody reads any more."""
        while True:
            stopping = self._stop.is_set()
            if stopping and not always:
                return
            drop_old = self.source.live or stopping
            try:
                if drop_old:
                    self._frames.put_nowait(item)
                else:
                    self._frames.put(item, timeout=0.1)
                return
            except queue.Full:
                if drop_old:
                    try:
                        self._frames.get_nowait()
                        self.stats["frames_dropped"] += 0 if stopping else 1
                    except queue.Empty:
                        pass
