"""`edgecap narrate`: say what is in front of the camera, and only when it changes.

Three threads, none waiting for another:

* capture reads frames, skips corrupt ones and notices a camera that stops delivering
  ("camera lost", retried with back-off, then "camera back");
* the main loop runs the scene detector on every frame and captions a new scene from the
  encoder features the detector already computed;
* the speech worker says one thing at a time (see edgecap.audio.speech).

`--log-json FILE` appends one JSON object per event: `t` (seconds on the source timeline),
`wall` (Unix time), `kind` and `text`, plus fields of that kind. Kinds: caption (what the
model said, with `speech`: queued/suppressed/muted), cue (camera lost/back, too dark ...),
fault, speech (an utterance starting/ending, with its WAV file), scene (same-scene
decisions), tone (light channel), control (a command), start and end.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from edgecap.audio.speech import SpeechWorker
from edgecap.audio.tones import TonePlayer, brightness_to_pitch
from edgecap.caption import describe_scene
from edgecap.core.providers import captioner_fallback
from edgecap.narration.capture import END, Capture
from edgecap.narration.colours import colour_name
from edgecap.narration.frames import Frame, FrameSource
from edgecap.narration.scene import ExposureChange, SameScene, SceneChange, SceneDetector, SceneOptions

log = logging.getLogger("edgecap")

CUES = {
    "ready": "Narration on.",
    "camera_lost": "Camera lost.",
    "camera_back": "Camera back.",
    "dark": "Too dark.",
    "bright": "Too bright.",
    "uniform": "Nothing to see, a plain surface.",
    "cpu": "Accelerator failed, using the processor.",
    "caption_failed": "Describing failed.",
    "faster": "Faster.",
    "slower": "Slower.",
    "unmute": "Sound on.",
}
CHANNELS = ("scene", "light", "colour", "text")


@dataclass(frozen=True)
class NarrateOptions:
    channel: str = "scene"  # scene | light | colour | text
    lost_after: float = 1.5  # seconds without a picture before "camera lost"
    retry_first: float = 0.5  # first reopen delay; doubles up to retry_max
    retry_max: float = 8.0
    tone_interval: float = 0.25  # light channel: a tone this often
    tone_seconds: float = 0.15
    colour_hold: float = 0.6  # colour channel: a colour must hold this long to be named
    queue_size: int = 8
    duration: float | None = None  # stop after this much source time
    max_errors_in_a_row: int = 50  # unexpected errors before narration gives up

    def __post_init__(self):
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r} (choose from {', '.join(CHANNELS)})")


class EventLog:
    """JSON lines, one per event, appended and flushed as they happen (thread-safe)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._file = open(self.path, "a", encoding="utf-8") if self.path else None  # noqa: SIM115
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, kind: str, text: str, t: float, **fields) -> None:
        record = {"t": round(float(t), 3), "wall": round(time.time(), 3), "kind": kind, "text": text}
        record.update({k: v for k, v in fields.items() if v is not None})
        with self._lock:
            self.counts[kind] += 1
            if self._file is not None:
                self._file.write(json.dumps(record) + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class ModelFailure(Exception):
    pass


class ModelResting(ModelFailure):
    """The model failed recently; not tried again until its rest is over."""


MODEL_REST = 10.0  # seconds of source time between attempts on a failing model


@dataclass
class Narrator:
    source: FrameSource
    captioner: object | None  # edgecap.core.model.OnnxCaptioner, or anything with encode/caption_features
    decoding: object | None  # DecodingOptions
    speech: SpeechWorker
    log: EventLog = field(default_factory=EventLog)
    scene_options: SceneOptions = field(default_factory=SceneOptions)
    options: NarrateOptions = field(default_factory=NarrateOptions)
    tones: TonePlayer | None = None

    def __post_init__(self):
        self.detector = SceneDetector(self._encode, self.scene_options)
        self.stats: Counter[str] = Counter()
        o = self.options
        self.capture = Capture(self.source, self.cue, self.fault, self.stats, o.queue_size, o.lost_after,
                               o.retry_first, o.retry_max)
        self._commands: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self.quit_requested = False
        self._t = 0.0  # source time of the frame being analysed
        self._caption_failed = False
        self._model_rest_until = -1e9
        self._last_tone_t = -1e9
        self._last_brightness = 0.0
        self._colour_seen: tuple[str, float] | None = None
        self._colour_said: str | None = None
        self._scene_count = 0
        self._frame: Frame | None = None
        self._text = None  # edgecap.narration.text_channel.TextChannel, made on first use
        self._last_confidence: str | None = None

    # --- control ------------------------------------------------------------------------------
    def command(self, word: str) -> None:
        """Thread-safe: queue a command word (see edgecap.narration.controls.COMMANDS)."""
        self._commands.put(word)

    def stop(self) -> None:
        """End narration; what is queued is still said (see quit())."""
        self._stop.set()

    def quit(self) -> None:
        """End narration now, without finishing what is queued."""
        self.quit_requested = True
        self._stop.set()

    def cue(self, name: str, t: float, **fields) -> None:
        text = CUES[name]
        status = self.speech.say(text, "cue", t, force=True)
        self.stats["cues"] += 1
        self.log("cue", text, t, cue=name, speech=status, **fields)

    def fault(self, text: str, t: float, **fields) -> None:
        self.stats["faults"] += 1
        self.log("fault", text, t, **fields)

    # --- the main loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Narrate until the source ends, `quit`, stop() or the duration is reached."""
        size = getattr(self.source, "size", None)
        self.log("start", self.source.name, 0.0, channel=self.options.channel, live=self.source.live,
                 fps=round(self.source.fps, 2) or None, size=list(size) if size else None,
                 provider=getattr(self.captioner, "provider", None))
        self.cue("ready", 0.0)
        fallback = captioner_fallback(self.captioner) if self.captioner is not None else None
        if fallback:  # the accelerator failed while loading: said once, the reason logged
            self.fault(fallback, 0.0, source="model")
            self.cue("cpu", 0.0)
        self.capture.start()
        errors_in_a_row = 0
        try:
            while not self._stop.is_set():
                self._handle_commands()
                item = self.capture.get(timeout=0.1)
                if item is None:
                    # A live source with no pictures still has a clock: --duration holds.
                    if self.options.duration is not None and self.capture.t >= self.options.duration:
                        break
                    continue
                if item is END:
                    break
                try:
                    self._process(item)
                    errors_in_a_row = 0
                except Exception as exc:  # noqa: BLE001 - one bad frame must not end narration
                    errors_in_a_row += 1
                    self.stats["errors"] += 1
                    self.fault(f"internal error: {type(exc).__name__}: {exc}", item.t, source="narrator")
                    log.exception("narration error")
                    if errors_in_a_row >= self.options.max_errors_in_a_row:
                        raise
                if self.options.duration is not None and item.t >= self.options.duration:
                    break
        finally:
            self._stop.set()
            self.capture.stop()
            if self._text is not None:
                if not self.quit_requested:
                    self._text.idle()  # what is being read is still said
                self._text.close()
            self.log("end", "", max(self._t, self.capture.t), **dict(self.stats))
        return 0

    def _handle_commands(self) -> None:
        while True:
            try:
                word = self._commands.get_nowait()
            except queue.Empty:
                return
            t = self._t
            self.log("control", word, t)
            if word == "describe":
                self._describe_now(t)
            elif word == "repeat":
                self.speech.repeat(t)
            elif word in ("stop", "mute"):
                getattr(self.speech, word)()  # SpeechWorker.stop or .mute
                if self.tones:
                    self.tones.stop()
            elif word in ("faster", "slower"):
                rate = self.speech.faster() if word == "faster" else self.speech.slower()
                self.cue(word, t, rate=rate)
            elif word == "unmute":
                self.speech.unmute()
                self.cue("unmute", t)
            elif word == "quit":
                self.quit()
            elif word == "read":
                self._text_channel().read_now(self._frame.rgb if self._frame else None, t)

    def _describe_now(self, t: float) -> None:
        if self.capture.health.lost:
            self.cue("camera_lost", t)
        elif self.options.channel == "scene":
            self.detector.force()
        elif self.options.channel == "colour":
            self._colour_said = None  # the next frame names its colour again
        elif self.options.channel == "text":
            self._text_channel().read_now(self._frame.rgb if self._frame else None, t)
        else:
            self.speech.say(f"Brightness {round(self._last_brightness * 100 / 255)} percent.", "cue", t,
                            force=True)

    # --- frames -------------------------------------------------------------------------------
    def _process(self, frame: Frame) -> None:
        self._t = frame.t
        self._frame = frame
        self.stats["frames_analysed"] += 1
        if self.options.channel == "text":
            return self._text_channel().observe(frame.rgb, frame.t)
        if self.options.channel == "light":
            return self._light(frame)
        if self.options.channel == "colour":
            return self._colour(frame)
        try:
            event = self.detector.observe(frame.rgb, frame.t)
        except ModelFailure as exc:
            self._model_failed(exc, frame.t)
            return
        if isinstance(event, SceneChange):
            self._announce(event)
        elif isinstance(event, SameScene):
            self.log("scene", "same scene", event.t, distance=round(event.distance, 4),
                     pixel_change=round(event.pixel_change, 3))
        elif isinstance(event, ExposureChange):
            if event.problem is None:
                self.log("scene", "view usable again", event.t)
            else:
                self.cue(event.problem, event.t)

    def _announce(self, change: SceneChange) -> None:
        try:
            result = self._with_cpu_fallback(
                lambda: describe_scene(self.captioner, change.rgb, change.features, self.decoding), "captioning",
                change.t)
        except ModelFailure as exc:
            self._model_failed(exc, change.t)
            return
        self._caption_failed = False
        self._scene_count += 1
        confidence = getattr(result, "confidence", None)
        if confidence == "unknown" and self._last_confidence == "unknown" and not change.forced:
            status = "suppressed"  # "I can't tell" once, not again for every view it cannot tell
        else:
            status = self.speech.say(result.caption, "caption", change.t, force=change.forced)
        self._last_confidence = confidence
        self.stats["captions"] += 1
        self.stats[f"captions_{status}"] += 1
        self.log("caption", result.caption, change.t, scene=self._scene_count, speech=status,
                 forced=change.forced or None, confidence=confidence, distance=round(change.distance, 4),
                 pixel_change=round(change.pixel_change, 3), ms=round(getattr(result, "ms", 0.0), 1))

    def _text_channel(self):
        if self._text is None:
            from edgecap.narration.text_channel import TextChannel

            self._text = TextChannel(self.speech.say, self.log)
        return self._text

    def _model_failed(self, exc: ModelFailure, t: float) -> None:
        if isinstance(exc, ModelResting):
            return
        self._model_rest_until = t + MODEL_REST
        self.fault(str(exc), t, source="model")
        if not self._caption_failed:  # said once until a caption succeeds again
            self._caption_failed = True
            self.cue("caption_failed", t)

    def _encode(self, rgb):
        if self._t < self._model_rest_until:
            raise ModelResting()
        return self._with_cpu_fallback(lambda: self.captioner.encode([rgb]), "encoding", self._t)

    def _with_cpu_fallback(self, run, what: str, t: float):
        try:
            return run()
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises plain RuntimeErrors
            provider = getattr(self.captioner, "provider", "CPUExecutionProvider")
            if provider == "CPUExecutionProvider":
                raise ModelFailure(f"{what} failed: {exc}") from exc
            self.fault(f"{what} failed on {provider}: {exc}; falling back to the CPU", t, source="model")
            self.cue("cpu", t)
            try:
                self.captioner.fall_back_to_cpu()
                return run()
            except Exception as again:  # noqa: BLE001
                raise ModelFailure(f"{what} failed on the CPU too: {again}") from again

    def _light(self, frame: Frame) -> None:
        small = cv2.resize(frame.rgb, (64, 64), interpolation=cv2.INTER_AREA)
        self._last_brightness = float(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).mean())
        if frame.t - self._last_tone_t < self.options.tone_interval:
            return
        self._last_tone_t = frame.t
        hz = brightness_to_pitch(self._last_brightness)
        path = None
        if self.tones is not None and not self.speech.muted:
            path = self.tones.play(hz, self.options.tone_seconds)
        self.stats["tones"] += 1
        self.log("tone", f"{hz:.0f} Hz", frame.t, hz=round(hz, 1), brightness=round(self._last_brightness, 1),
                 wav=str(path) if path else None)

    def _colour(self, frame: Frame) -> None:
        name = colour_name(frame.rgb)
        if self._colour_seen is None or self._colour_seen[0] != name:
            self._colour_seen = (name, frame.t)
        held = frame.t - self._colour_seen[1]
        if name != self._colour_said and (held >= self.options.colour_hold or self._colour_said is None):
            self._colour_said = name
            status = self.speech.say(name, "colour", frame.t, force=True)
            self.stats["captions"] += 1
            self.log("caption", name, frame.t, channel="colour", speech=status)
