"""Has the view changed? Cheap per-frame measures and the scene-change detector.

The detector decides when a caption is worth speaking. It works in three stages so
that the encoder only runs when something really changed:

1. pixel gate: a perceptual hash of the frame against the last announced scene;
2. hysteresis: the new view must hold still (little frame-to-frame change, no drift)
   for `stable_frames` frames and `stable_seconds` seconds, so a person walking
   through the picture or a cross-fade never reaches the model; blurred frames are
   passed over in favour of a sharp one;
3. semantic gate: cosine distance between the encoder's pooled features of the
   steady frame and of the announced scene. Those features are the ones the caption
   is decoded from, so a real change costs no extra encoder run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from edgecap.core.image import exposure_problem

WORK_WIDTH = 320  # frames are measured at this width, so thresholds do not depend on the camera
THUMB = 16
HASH_SIZE = 16  # difference hash of HASH_SIZE x HASH_SIZE bits


@dataclass(frozen=True)
class SceneOptions:
    # Mean absolute difference (gray levels, 0-255) between 16x16 thumbnails of consecutive
    # frames above which the view counts as moving. Measured on 320x240 photos: noise and
    # JPEG stay under 1, a 3 px hand tremor moves 4 (at most 8), a person crossing the
    # picture 15 and more, different photos are 32-60 apart.
    motion_threshold: float = 10.0
    # The same measure against the first frame of a steady stretch: catches cross-fades and
    # slow pans that change little from one frame to the next (a 6 px shake stays near 11).
    drift_threshold: float = 20.0
    # Fraction of differing difference-hash bits against the announced scene that counts as
    # a pixel-level change. Noisy re-encoded copies of a photo differ in < 9 %, 3 px shifts
    # in < 17 %, different photos in 40-55 %.
    hash_threshold: float = 0.25
    # Cosine distance of pooled EfficientNet-Lite features that counts as a new scene.
    # Measured on 30 photos: brightness x0.7/x1.3, 5 % shifts and crops, 5 degree turns and
    # sensor noise stay below 0.14 (noise at worst 0.29); different photos are 0.46 and
    # more apart (median 0.74). Random-weight test encoders need a much smaller value.
    semantic_threshold: float = 0.30
    stable_seconds: float = 1.0
    stable_frames: int = 3
    # Variance of the Laplacian of the 320 px wide gray frame under which it counts as blurred:
    # sharp photos measure 60-1800, the same photos blurred by a 2.5 px Gaussian 3-13.
    blur_threshold: float = 30.0
    blur_patience: float = 2.0  # after this long steady but blurred, describe the sharpest frame anyway
    exposure_seconds: float = 0.5  # a dark or overexposed view must last this long to be announced
    force_patience: float = 1.0  # "describe now" waits at most this long for a steady frame


@dataclass
class FrameMeasures:
    thumb: np.ndarray  # (16, 16) float32 gray
    hash_bits: np.ndarray  # (256,) bool
    sharpness: float  # variance of the Laplacian
    brightness: float  # mean luminance 0-255
    exposure: str | None  # dark | bright | uniform | None


def measure(rgb: np.ndarray) -> FrameMeasures:
    h, w = rgb.shape[:2]
    if w > WORK_WIDTH:
        rgb = cv2.resize(rgb, (WORK_WIDTH, max(1, round(h * WORK_WIDTH / w))), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
    tiny = cv2.resize(gray, (HASH_SIZE + 1, HASH_SIZE), interpolation=cv2.INTER_AREA).astype(np.int16)
    hash_bits = (tiny[:, 1:] > tiny[:, :-1]).ravel()
    sharpness = float(cv2.Laplacian(gray, cv2.CV_32F).var())
    return FrameMeasures(thumb, hash_bits, sharpness, float(gray.mean()), exposure_problem(rgb))


def thumb_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def hash_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a != b)) / a.size


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return 1.0 if denom == 0 else float(1.0 - a @ b / denom)


# --- detector events -----------------------------------------------------------------
@dataclass
class SceneChange:
    """A steady new view worth describing; `features` are ready for caption_features()."""
    rgb: np.ndarray
    t: float
    features: Any
    distance: float  # semantic distance to the previous scene (1.0 for the first)
    pixel_change: float  # hash distance to the previous scene (1.0 for the first)
    forced: bool = False


@dataclass
class SameScene:
    """The pixels changed but the encoder says it is still the announced scene."""
    t: float
    distance: float
    pixel_change: float


@dataclass
class ExposureChange:
    t: float
    problem: str | None  # dark | bright | uniform; None when the view is usable again


@dataclass
class _Scene:
    measures: FrameMeasures
    pooled: np.ndarray


@dataclass
class _Steady:
    """A stretch of frames that hold still; the candidate for a new scene."""
    start: float
    first: FrameMeasures
    count: int = 0
    latest_sharp: tuple[np.ndarray, float, FrameMeasures] | None = None
    sharpest: tuple[np.ndarray, float, FrameMeasures] | None = None

    def add(self, rgb: np.ndarray, t: float, m: FrameMeasures, blur_threshold: float) -> None:
        self.count += 1
        if m.sharpness >= blur_threshold:
            self.latest_sharp = (rgb, t, m)
        if self.sharpest is None or m.sharpness > self.sharpest[2].sharpness:
            self.sharpest = (rgb, t, m)


@dataclass
class SceneDetector:
    """Feed every frame to observe(); it returns an event when there is something to say."""
    embed: Callable[[np.ndarray], Any]  # rgb -> features with .pooled (1, C)
    options: SceneOptions = field(default_factory=SceneOptions)
    scene: _Scene | None = None
    _previous: FrameMeasures | None = None
    _steady: _Steady | None = None
    _exposure: str | None = None  # the problem announced last (None: view is fine)
    _exposure_since: tuple[str, float] | None = None
    _force_requested: bool = False
    _forced_at: float | None = None

    def force(self) -> None:
        """Describe the next steady frame whatever the gates say ("describe now")."""
        self._force_requested = True

    def forget_scene(self) -> None:
        """The next steady view is announced even if it is the same as the last one."""
        self.scene = None

    def observe(self, rgb: np.ndarray, t: float) -> SceneChange | SameScene | ExposureChange | None:
        o = self.options
        m = measure(rgb)
        motion = thumb_distance(m.thumb, self._previous.thumb) if self._previous is not None else 0.0
        self._previous = m
        if self._force_requested:
            self._force_requested, self._forced_at = False, t

        exposure_event = self._track_exposure(m, t)
        if m.exposure is not None:
            self._steady = None
            return exposure_event
        if exposure_event is not None:
            return exposure_event

        if self._forced_at is not None:
            if motion <= o.motion_threshold or t - self._forced_at >= o.force_patience:
                return self._announce(rgb, t, m, forced=True)
            return None

        if motion > o.motion_threshold or (
                self._steady is not None and thumb_distance(m.thumb, self._steady.first.thumb) > o.drift_threshold):
            self._steady = None
            return None
        if self.scene is not None and hash_distance(m.hash_bits, self.scene.measures.hash_bits) <= o.hash_threshold:
            self._steady = None  # still the announced view
            return None
        if self._steady is None:
            self._steady = _Steady(start=t, first=m)
        steady = self._steady
        steady.add(rgb, t, m, o.blur_threshold)
        held = t - steady.start
        if steady.count < o.stable_frames or held < o.stable_seconds:
            return None
        if steady.latest_sharp is not None:
            best = steady.latest_sharp
        elif held >= o.stable_seconds + o.blur_patience:
            best = steady.sharpest
        else:
            return None  # steady but blurred: wait for a sharp frame
        return self._check(*best)

    def _check(self, rgb: np.ndarray, t: float, m: FrameMeasures) -> SceneChange | SameScene | None:
        self._steady = None  # first, so that a failing encoder is retried only after another steady spell
        features = self.embed(rgb)
        pooled = np.asarray(features.pooled)[0]
        if self.scene is None:
            self.scene = _Scene(m, pooled)
            return SceneChange(rgb, t, features, distance=1.0, pixel_change=1.0)
        pixel_change = hash_distance(m.hash_bits, self.scene.measures.hash_bits)
        distance = cosine_distance(pooled, self.scene.pooled)
        if distance >= self.options.semantic_threshold:
            self.scene = _Scene(m, pooled)
            return SceneChange(rgb, t, features, distance, pixel_change)
        # Same content from a slightly different view: follow it at the pixel level, but
        # keep the announced scene's features so that slow drift still adds up.
        self.scene = _Scene(m, self.scene.pooled)
        return SameScene(t, distance, pixel_change)

    def _announce(self, rgb: np.ndarray, t: float, m: FrameMeasures, forced: bool) -> SceneChange:
        self._steady, self._forced_at = None, None
        features = self.embed(rgb)
        pooled = np.asarray(features.pooled)[0]
        previous = self.scene
        self.scene = _Scene(m, pooled)
        if previous is None:
            return SceneChange(rgb, t, features, 1.0, 1.0, forced)
        return SceneChange(rgb, t, features, cosine_distance(pooled, previous.pooled),
                           hash_distance(m.hash_bits, previous.measures.hash_bits), forced)

    def _track_exposure(self, m: FrameMeasures, t: float) -> ExposureChange | None:
        """Announce a dark/overexposed view once it has lasted; announce nothing on recovery
        beyond clearing the state (the next steady scene speaks for itself)."""
        if m.exposure is None:
            self._exposure_since = None
            if self._exposure is not None:
                self._exposure = None
                return ExposureChange(t, None)
            return None
        if self._exposure_since is None or self._exposure_since[0] != m.exposure:
            self._exposure_since = (m.exposure, t)
        forced = self._forced_at is not None
        held = t - self._exposure_since[1]
        if m.exposure != self._exposure and (held >= self.options.exposure_seconds or forced):
            self._exposure = m.exposure
            self._forced_at = None
            return ExposureChange(t, m.exposure)
        if forced and m.exposure == self._exposure:
            self._forced_at = None
            return ExposureChange(t, m.exposure)  # asked to describe: say it again
        return None
