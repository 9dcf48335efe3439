"""Work that must never run on the GUI thread: loading the model, captioning, reading
text, and the camera (preview and narration).

Results come back as Qt signals, which Qt delivers on the GUI thread.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal
from PySide6.QtGui import QImage

from edgecap.core.shared_captioner import SharedCaptioner
from edgecap.narration.capture import SourceHealth
from edgecap.narration.frames import Frame, FrameSource, FrameSourceError

log = logging.getLogger("edgecap")

PREVIEW_FPS = 12.0


def qimage_from_rgb(rgb: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()  # copy: own the pixels


def rgb_from_qimage(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h, stride = image.width(), image.height(), image.bytesPerLine()
    data = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    return np.ascontiguousarray(data[:, :3 * w].reshape(h, w, 3))


def spoken_description(captioner: "SharedCaptioner", rgb: np.ndarray, options):
    """What edgecap says about one picture: edgecap.caption's grounded decision (sentence and
    confidence) where that module exists, else the model's caption."""
    try:
        from edgecap.caption import describer_for
    except ImportError:
        return captioner.caption([rgb], options)[0]
    with captioner.lock:  # one provider for the whole decision; the narrator shares this describer
        return describer_for(captioner).describe([rgb], options)[0]


class ModelHolder:
    """Loads the captioner once, on whichever worker thread needs it first."""

    def __init__(self, load: Callable[[], object]):
        self._load = load
        self._lock = threading.Lock()
        self._captioner: SharedCaptioner | None = None
        self.error: str | None = None

    def get(self) -> SharedCaptioner:
        with self._lock:
            if self._captioner is None:
                try:
                    self._captioner = SharedCaptioner(self._load())
                    self.error = None
                except Exception as exc:  # noqa: BLE001 - shown to the user, retried on the next request
                    self.error = f"the model could not be loaded: {exc}"
                    raise RuntimeError(self.error) from exc
            return self._captioner

    @property
    def loaded(self) -> bool:
        return self._captioner is not None


class CaptionWorker(QObject):
    """Describes (or reads) one picture at a time on its own QThread."""

    ready = Signal(str)  # the onnxruntime provider, once the model is loaded
    described = Signal(int, str, object)  # job, label of the picture, CaptionResult
    read_done = Signal(int, str, str)  # job, label, the text found
    failed = Signal(int, str, str)  # job, label, one line saying what went wrong
    _job = Signal(int, str, str, object, object)  # kind, label, rgb, options: queued to the worker thread

    def __init__(self, model: ModelHolder, reader: Callable | None = None):
        super().__init__()
        self.model = model
        self.reader = reader
        self.busy = 0
        self._next = 0
        self._thread = QThread()
        self._thread.setObjectName("edgecap-caption")
        self.moveToThread(self._thread)
        self._job.connect(self._run)
        self._thread.start()

    def warm(self) -> None:
        self._job.emit(0, "warm", "", None, None)

    def describe(self, rgb: np.ndarray, label: str, options) -> int:
        return self._submit("describe", label, rgb, options)

    def read_text(self, rgb: np.ndarray, label: str) -> int:
        return self._submit("read", label, rgb, None)

    def _submit(self, kind, label, rgb, options) -> int:
        self._next += 1
        self.busy += 1
        self._job.emit(self._next, kind, label, rgb, options)
        return self._next

    def _run(self, job: int, kind: str, label: str, rgb, options) -> None:
        try:
            if kind == "warm":
                self.ready.emit(self.model.get().provider)
            elif kind == "describe":
                self.described.emit(job, label, spoken_description(self.model.get(), rgb, options))
            elif kind == "read":
                found = self.reader(rgb)
                self.read_done.emit(job, label, str(getattr(found, "text", found) or "").strip())
        except Exception as exc:  # noqa: BLE001 - reported in the window and aloud
            log.warning("%s failed: %s", kind, exc)
            if kind != "warm":
                self.failed.emit(job, label, str(exc))
            else:
                self.failed.emit(0, "model", str(exc))
        finally:
            if kind != "warm":
                self.busy -= 1

    def close(self) -> None:
        self._thread.quit()
        self._thread.wait(30_000)  # a caption in progress finishes (well under a second here)


class Tap(FrameSource):
    """Passes a source's frames through and keeps the newest picture for preview and "describe now"."""

    def __init__(self, inner: FrameSource, on_picture: Callable[[np.ndarray], None]):
        self.inner = inner
        self.on_picture = on_picture
        self.name, self.live, self.fps = inner.name, inner.live, inner.fps
        self.size = getattr(inner, "size", None)
        self.ended = False

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            self.ended = True
        elif frame.rgb is not None:
            self.on_picture(frame.rgb)
        return frame

    def reopen(self) -> bool:
        return self.inner.reopen()

    def close(self) -> None:
        self.inner.close()


class Camera(QObject):
    """Reads the camera on its own thread: preview frames always, a Narrator while narration is on.

    `open_source()` returns a FrameSource or raises FrameSourceError; `make_narrator(source,
    log)` builds an edgecap.narration.narrate.Narrator around the tapped source. The narrator owns the
    source while it runs (its Capture thread reads it); between narrations this thread reads it.
    """

    preview = Signal(QImage)
    state = Signal(str, str)  # open | missing | lost | back | ended | error | closed, and a message
    event = Signal(str, str, dict)  # the narrator's events: kind (caption, cue, fault), text, fields

    def __init__(self, open_source: Callable[[], FrameSource], make_narrator: Callable):
        super().__init__()
        self._open_source = open_source
        self._make_narrator = make_narrator
        self._lock = threading.Lock()
        self._latest: np.ndarray | None = None
        self._last_preview = 0.0
        self._narrate = False
        self.narrator = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.running = False

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._closing.clear()
        self._thread = threading.Thread(target=self._run, name="edgecap-camera", daemon=True)
        self.running = True
        self._thread.start()

    @property
    def latest(self) -> np.ndarray | None:
        with self._lock:
            return None if self._latest is None else self._latest.copy()

    @property
    def narrating(self) -> bool:
        return self._narrate

    def set_narration(self, on: bool) -> None:
        with self._lock:
            self._narrate = on
            if not on and self.narrator is not None:
                self.narrator.quit()

    def command(self, word: str) -> None:
        with self._lock:
            if self.narrator is not None:
                self.narrator.command(word)

    def close(self, timeout: float = 10.0) -> None:
        self._closing.set()
        self.set_narration(False)
        if self._thread is not None:
            self._thread.join(timeout)

    def _picture(self, rgb: np.ndarray) -> None:
        with self._lock:
            self._latest = rgb
        now = time.monotonic()
        if now - self._last_preview >= 1 / PREVIEW_FPS:
            self._last_preview = now
            self.preview.emit(qimage_from_rgb(rgb))

    def _log(self, kind: str, text: str, t: float, **fields) -> None:
        if kind in ("caption", "cue", "fault"):
            self.event.emit(kind, text, fields)

    def _run(self) -> None:
        try:
            source = self._open_source()
        except (FrameSourceError, OSError) as exc:
            self.running = False
            self.state.emit("missing", str(exc))
            return
        tap = Tap(source, self._picture)
        self.state.emit("open", source.name)
        final = ("closed", "")
        try:
            final = self._loop(tap)
        except Exception as exc:  # noqa: BLE001 - said in the window; images still work
            log.exception("camera thread failed")
            final = ("error", f"camera stopped: {exc}")
        finally:
            source.close()
            self.running = False
            self.state.emit(*final)

    def _loop(self, tap: Tap) -> tuple[str, str]:
        health = SourceHealth(1.5, lambda name, t: self.state.emit("lost" if name == "camera_lost" else "back", ""))
        retry_at = 0.0
        while not self._closing.is_set():
            if self._narrate:
                try:
                    narrator = self._make_narrator(tap, self._log)  # may load the model: not under the lock
                except Exception as exc:  # noqa: BLE001 - narration off, preview and images go on
                    self._narrate = False
                    self.state.emit("error", f"narration could not start: {exc}")
                    continue
                with self._lock:
                    if not self._narrate:
                        continue
                    self.narrator = narrator
                narrator.run()
                with self._lock:
                    self.narrator = None
                if tap.ended:
                    self._narrate = False
                    return "ended", f"{tap.name} ended"
                continue
            frame = tap.read()
            if frame is None:
                return "ended", f"{tap.name} ended"
            if frame.rgb is None:
                health.missing(frame.t)
                if health.lost and tap.live and time.monotonic() >= retry_at:
                    retry_at = time.monotonic() + 2.0
                    tap.reopen()
                self._closing.wait(0.05)
                continue
            health.picture(frame.t)
            if not tap.live:
                self._closing.wait(1 / (tap.fps or 10.0))  # files: show them at their own pace
        return "closed", ""
