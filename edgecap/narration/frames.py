"""Where frames come from: a camera, a video file or a folder of photos, behind one interface.

Every source hands out `Frame`s stamped with `t`, seconds on the source's own timeline
(video position, slideshow position, or time since the camera was opened). A frame
with `rgb=None` says the source had nothing usable at that moment: `missing` (the
camera returned no picture) or `corrupt` (a frame that could not be decoded).
`read()` returns None only when a file source has ended.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edgecap.core.image import ImageError, read_image

log = logging.getLogger("edgecap")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class FrameSourceError(Exception):
    """A source that cannot be opened at all; the message is one line for the user."""


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray | None
    t: float  # seconds on the source timeline
    index: int
    wall: float = field(default_factory=time.monotonic)  # when it was read
    problem: str | None = None  # None | "missing" | "corrupt"


def usable(rgb: object) -> bool:
    """An RGB uint8 picture the rest of the pipeline can take."""
    return (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
            and rgb.shape[0] >= 8 and rgb.shape[1] >= 8)


class FrameSource:
    name = "source"
    live = False  # frames arrive in real time; a slow reader must drop frames, not queue them
    fps = 0.0

    def read(self) -> Frame | None:
        raise NotImplementedError

    def reopen(self) -> bool:
        """Try to get a lost device back; True when it opened."""
        return True

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _quiet_opencv() -> None:
    """Keep OpenCV's own warnings (\"can't open camera by index\") off the terminal; the
    narrator reports a missing camera itself."""
    logging_ = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_ is not None and log.getEffectiveLevel() > logging.DEBUG:
        logging_.setLogLevel(logging_.LOG_LEVEL_ERROR)


class CameraSource(FrameSource):
    """An OpenCV camera. Asks for `size`/`fps` if given and reports what the device granted."""

    live = True

    def __init__(self, index: int = 0, size: tuple[int, int] | None = None, fps: float | None = None):
        self.index, self.requested_size, self.requested_fps = index, size, fps
        self.name = f"camera {index}"
        self.size: tuple[int, int] | None = None
        self._start = time.monotonic()
        self._count = 0
        self._cap: cv2.VideoCapture | None = None
        self._open()

    def _open(self) -> bool:
        if self._cap is not None:
            self._cap.release()
        _quiet_opencv()  # a lost camera is retried for as long as it is gone: one warning per retry is noise
        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            cap.release()
            self._cap = None
            return False
        if self.requested_size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.requested_size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.requested_size[1])
        if self.requested_fps:
            cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest picture, not one from a stale buffer
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        log.info("%s: %sx%s at %.1f fps", self.name, *self.size, self.fps)
        self._cap = cap
        return True

    @property
    def opened(self) -> bool:
        return self._cap is not None

    def read(self) -> Frame:
        t = time.monotonic() - self._start
        bgr = None
        if self._cap is not None:
            ok, bgr = self._cap.read()
            if not ok:
                bgr = None
        if bgr is None:
            time.sleep(0.05)  # a failing device answers instantly; do not spin
            return Frame(None, t, self._count, problem="missing")
        self._count += 1
        return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t, self._count - 1)

    def reopen(self) -> bool:
        return self._open()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoSource(FrameSource):
    """A video file, frame by frame; `t` is the frame's position in the video."""

    MAX_BAD_READS = 25  # consecutive undecodable frames before the file counts as ended

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise FrameSourceError(f"{path}: no such video file")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise FrameSourceError(f"{path}: not a readable video")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._index = 0
        self._grabbed = False  # a frame was grabbed while skipping bad ones and is still to be retrieved

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps

    def read(self) -> Frame | None:
        index = self._index
        if self._grabbed:
            self._grabbed = False
            ok, bgr = self._cap.retrieve()
        else:
            ok, bgr = self._cap.read()
        self._index += 1
        if ok and bgr is not None and bgr.size:
            return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index / self.fps, index)
        if self.frame_count and index < self.frame_count - 1:
            bad = 1
            while bad < self.MAX_BAD_READS and not self._cap.grab():
                bad += 1
                self._index += 1
            if bad < self.MAX_BAD_READS:
                self._grabbed = True  # the good frame after the bad ones: handed out by the next read
                return Frame(None, index / self.fps, index, problem="corrupt")
        return None

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource(FrameSource):
    """A slideshow of the photos in a folder: each one shown for `seconds` at `fps`."""

    def __init__(self, folder: str | Path, seconds: float = 3.0, fps: float = 5.0, loop: bool = False):
        self.folder = Path(folder)
        self.name = str(folder)
        if not self.folder.is_dir():
            raise FrameSourceError(f"{folder}: not a folder")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FrameSourceError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.fps, self.loop = fps, loop
        self.frames_per_image = max(1, round(seconds * fps))
        self._index = 0
        self._current: tuple[int, np.ndarray | None] | None = None

    def read(self) -> Frame | None:
        index = self._index
        slot = index // self.frames_per_image
        if slot >= len(self.paths) and not self.loop:
            return None
        self._index += 1
        path = self.paths[slot % len(self.paths)]
        if self._current is None or self._current[0] != slot:
            try:
                self._current = (slot, read_image(path))
            except ImageError as exc:
                log.warning("%s", exc)
                self._current = (slot, None)
                self._index = (slot + 1) * self.frames_per_image  # skip the rest of its slot
                return Frame(None, index / self.fps, index, problem="corrupt")
        return Frame(self._current[1], index / self.fps, index)


class MemorySource(FrameSource):
    """Pictures already in memory, one every 1/fps seconds (tests, or a caller with its own capture)."""

    def __init__(self, frames, fps: float = 10.0, name: str = "frames in memory"):
        self.frames, self.fps, self.name = list(frames), fps, name
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= len(self.frames):
            return None
        index = self._index
        self._index += 1
        return Frame(self.frames[index], index / self.fps, index)


class Paced(FrameSource):
    """Plays a file like a camera (`--realtime`): each frame at its time, and frames a slow
    reader missed are skipped, so the timeline keeps up with the clock."""

    live = True

    def __init__(self, inner: FrameSource, clock: Callable[[], float] = time.monotonic):
        self.inner, self.clock = inner, clock
        self.name, self.fps = inner.name, inner.fps
        self.skipped = 0
        self._origin: tuple[float, float] | None = None

    def read(self) -> Frame | None:
        frame_time = 1.0 / (self.fps or 25.0)
        while True:
            frame = self.inner.read()
            if frame is None:
                return None
            if self._origin is None:
                self._origin = (self.clock(), frame.t)
            delay = self._origin[0] + (frame.t - self._origin[1]) - self.clock()
            if delay >= -frame_time:
                break
            self.skipped += 1
        if delay > 0:
            time.sleep(delay)
        return Frame(frame.rgb, frame.t, frame.index, time.monotonic(), frame.problem)

    def reopen(self) -> bool:
        return self.inner.reopen()

    def close(self) -> None:
        self.inner.close()


class Looping(FrameSource):
    """Plays a file source again and again, with a timeline that keeps counting up."""

    def __init__(self, make: Callable[[], FrameSource]):
        self.make = make
        self.inner = make()
        self.name, self.fps, self.live = self.inner.name, self.inner.fps, self.inner.live
        self.loops = 0
        self._offset = 0.0
        self._last_t = 0.0
        self._count = 0

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            self.inner.close()
            self.inner = self.make()
            self.loops += 1
            self._offset = self._last_t + 1.0 / (self.fps or 25.0)
            frame = self.inner.read()
            if frame is None:
                return None
        self._last_t = self._offset + frame.t
        self._count += 1
        return Frame(frame.rgb, self._last_t, self._count - 1, frame.wall, frame.problem)

    def close(self) -> None:
        self.inner.close()


def open_source(args) -> FrameSource:
    if args.camera is not None:
        camera = CameraSource(args.camera, args.camera_size, args.camera_fps)
        if not camera.opened:  # absent at the start: say so; unplugged later: announced and retried
            raise FrameSourceError(f"camera {args.camera} cannot be opened (not connected, or in use; "
                                   "try another --camera number)")
        return camera
    if args.video is not None:
        make = lambda: VideoSource(args.video)  # noqa: E731
    else:
        make = lambda: ImageFolderSource(args.images, args.seconds_per_image, args.slideshow_fps)  # noqa: E731
    source = Looping(make) if args.loop else make()
    return Paced(source) if args.realtime else source



def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected a size like 1280x720, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"expected a positive size, got {text!r}")
    return w, h
