"""The main window: what was said, in large text, and every action on a key.

Layout, top to bottom (and the Tab order): the latest description, its confidence,
the action buttons, the history, the camera preview (for a sighted helper), the status
line. Nothing needs the mouse or colour; every widget has an accessible name and
description; messages are spoken by the chosen voice (edgecap or the screen reader).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QAccessible, QAccessibleAnnouncementEvent, QAction, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (QGridLayout, QLabel, QListWidget, QMainWindow, QSizePolicy, QToolButton, QVBoxLayout,
                               QWidget)

from edgecap.app.actions import ActionHandlers
from edgecap.app.keymap import ACTIONS, spoken_keys
from edgecap.app.settings import AppSettings
from edgecap.app.theme import stylesheet
from edgecap.app.voice import open_speech
from edgecap.app.workers import Camera, CaptionWorker, ModelHolder, qimage_from_rgb, rgb_from_qimage
from edgecap.core.image import ImageError, read_image

log = logging.getLogger("edgecap")

CONFIDENCE_WORDS = {"sure": "sure", "hedged": "not certain", "unknown": "can't tell"}
NOTHING_YET = "Nothing described yet. Press Space to describe."


def find_reader():
    """(rgb -> the text to say, None) when text reading (edgecap.vision.reading) is installed, else (None, why not)."""
    try:
        from edgecap.vision.reading import shared_reader
    except ImportError as exc:
        return None, f"Reading text is not available in this version of edgecap ({exc})."
    try:
        from edgecap.vision.read_aloud import NO_TEXT, spoken_blocks  # what `edgecap read` says, block by block
    except ImportError:
        NO_TEXT, spoken_blocks = "No text found.", lambda reading: [reading.text] if reading.text else []

    def read(rgb: np.ndarray) -> str:
        return " ".join(spoken_blocks(shared_reader().read(rgb))) or NO_TEXT

    return read, None


class Button(QToolButton):
    """A button that keeps Space and Enter for itself while it has focus (they press it)."""

    def event(self, e):
        if e.type() == QEvent.Type.ShortcutOverride and e.key() in (Qt.Key.Key_Space, Qt.Key.Key_Return,
                                                                    Qt.Key.Key_Enter) \
                and e.modifiers() == Qt.KeyboardModifier.NoModifier:
            e.accept()
            return True
        return super().event(e)

    def keyPressEvent(self, e):
        if e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.click()
        else:
            super().keyPressEvent(e)


def _describe(widget, name: str, description: str) -> None:
    if name:
        widget.setAccessibleName(name)
    widget.setAccessibleDescription(description)


class MainWindow(ActionHandlers, QMainWindow):
    def __init__(self, settings: AppSettings, settings_path: Path | None = None, load_model=None,
                 open_source=None, reader=None):
        super().__init__()
        self.settings = settings
        self.settings_path = settings_path
        self.image: tuple[str, np.ndarray] | None = None  # the last opened image, described by Space without a camera
        self.announced: list[str] = []  # everything handed to the screen reader (tests read it)
        self.setWindowTitle("edgecap")
        _describe(self, "edgecap", "Describes photos and the camera view aloud.")
        self.setAcceptDrops(True)
        self._build_widgets()
        self._build_actions()
        if reader is None:
            reader, self.read_unavailable = find_reader()
        else:
            self.read_unavailable = None
        if reader is None:
            self.actions["read"].setEnabled(False)
            self.buttons["read"].setAccessibleDescription(self.read_unavailable)
            self.buttons["read"].setToolTip(self.read_unavailable)
        self.model = ModelHolder(load_model or self._load_default_model)
        self.worker = CaptionWorker(self.model, reader)
        self.worker.described.connect(self._described)
        self.worker.read_done.connect(self._text_read)
        self.worker.failed.connect(self._failed)
        self.worker.ready.connect(self._model_ready)
        self._start_speech()
        self.tones = None
        self.camera = Camera(open_source or self._open_camera, self._make_narrator)
        self.camera.preview.connect(self._show_preview)
        self.camera.state.connect(self._camera_state)
        self.camera.event.connect(self._narrator_event)
        self.apply_theme()
        self.worker.warm()
        if settings.camera >= 0 or open_source is not None:
            self.camera.start()
        else:
            self._camera_state("missing", "the camera is turned off in the settings")

    # --- building ------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.caption = QLabel(NOTHING_YET)
        self.caption.setObjectName("caption")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByKeyboard
                                             | Qt.TextInteractionFlag.TextSelectableByMouse)
        self.caption.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.caption.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        # No fixed accessible name: a screen reader reads the sentence itself as the name.
        _describe(self.caption, "", "The latest description, as it was spoken.")
        self.confidence = QLabel("Confidence: none yet")
        self.confidence.setObjectName("confidence")
        _describe(self.confidence, "", "How sure edgecap is of the latest description.")
        self.history = QListWidget()
        self.history.setObjectName("history")
        self.history.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        _describe(self.history, "History", "Earlier descriptions, newest first, with their times. "
                                           "Control Shift C copies them.")
        self.preview = QLabel("No picture")
        self.preview.setObjectName("preview")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(320, 240)
        self.preview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        _describe(self.preview, "Picture preview", "The camera view or the open image, for a sighted helper.")
        self.status = QLabel("Starting.")
        self.status.setObjectName("status")
        _describe(self.status, "", "Status line.")
        self.statusBar().addWidget(self.status, 1)
        self.statusBar().setSizeGripEnabled(False)  # an unnamed grip is noise to a screen reader

        self.buttons: dict[str, Button] = {}
        grid = QGridLayout()
        for i, action in enumerate(a for a in ACTIONS if a.button):
            button = Button()
            button.setObjectName(action.id)
            button.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
            self.buttons[action.id] = button
            grid.addWidget(button, i // 6, i % 6)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(self.caption)
        layout.addWidget(self.confidence)
        layout.addLayout(grid)
        layout.addWidget(self.history, 1)
        layout.addWidget(self.preview, 2)
        self.setCentralWidget(central)
        order = [self.caption, *self.buttons.values(), self.history]
        for a, b in zip(order, order[1:]):
            QWidget.setTabOrder(a, b)

    def _build_actions(self) -> None:
        self.actions: dict[str, QAction] = {}
        menus = {"File": self.menuBar().addMenu("&File"), "Speech": self.menuBar().addMenu("&Speech"),
                 "Help": self.menuBar().addMenu("&Help")}
        where = {"open": "File", "paste": "File", "copy": "File", "retry": "File", "settings": "File",
                 "quit": "File", "keys": "Help"}
        for spec in ACTIONS:
            action = QAction(spec.label, self)
            action.setShortcuts([QKeySequence(k) for k in spec.keys])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.setCheckable(spec.checkable)
            action.setToolTip(f"{spec.description} Key: {spoken_keys(spec)}.")
            handler = getattr(self, f"on_{spec.id}")
            (action.toggled if spec.checkable else action.triggered).connect(handler)
            self.addAction(action)
            menus[where.get(spec.id, "Speech")].addAction(action)
            self.actions[spec.id] = action
            if spec.id in self.buttons:
                button = self.buttons[spec.id]
                button.setDefaultAction(action)
                _describe(button, spec.label.rstrip("…"), f"{spec.description} Key: {spoken_keys(spec)}.")
        self.actions["detail"].setChecked(self.settings.detail == "detailed")
        self.buttons["retry"].setEnabled(False)

    def apply_theme(self) -> None:
        self.setStyleSheet(stylesheet(self.settings.high_contrast, self.settings.font_size))

    # --- speaking and showing ------------------------------------------------------------------
    def _start_speech(self) -> None:
        s = self.settings
        self.speech, self.voice, problem = open_speech(s.voice, s.speaker, s.rate)
        self.voice.announce.connect(self.announce)
        if problem:
            self.set_status(problem + ".")
            self.announce(problem + ".")

    def announce(self, text: str) -> None:
        """Hand text to the screen reader (AT-SPI, UI Automation): it says it in the user's voice."""
        self.announced.append(text)
        event = QAccessibleAnnouncementEvent(self.caption, text)
        event.setPoliteness(QAccessible.AnnouncementPoliteness.Assertive)
        QAccessible.updateAccessibility(event)

    def say(self, text: str, kind: str = "cue") -> None:
        self.speech.say(text, kind, force=True)

    def set_status(self, text: str, speak: bool = False) -> None:
        self.status.setText(text)
        if speak:
            self.say(text)

    def show_sentence(self, text: str, confidence: str | None, source: str, status: str = "ok") -> None:
        self.caption.setText(text)  # Qt tells AT-SPI clients the label's name changed (the walk checks it)
        if status != "ok":
            self.confidence.setText(f"Confidence: nothing to describe ({status})")
        elif confidence is None:
            self.confidence.setText("Confidence: not reported by this model")
        else:
            self.confidence.setText(f"Confidence: {CONFIDENCE_WORDS.get(confidence, confidence)}")
        self.history.insertItem(0, f"{time.strftime('%H:%M:%S')}  {text}  ({source})")

    def history_text(self, only_selected: bool = False) -> str:
        items = self.history.selectedItems() if only_selected else [self.history.item(i)
                                                                     for i in range(self.history.count())]
        return "\n".join(item.text() for item in items)

    # --- pictures in ---------------------------------------------------------------------------
    def open_paths(self, paths) -> int:
        """Describe each readable image; a bad one is reported and the rest go on. Returns how many."""
        count = 0
        for path in paths:
            try:
                rgb = read_image(path)
            except ImageError as exc:
                self.set_status(str(exc), speak=True)
                continue
            self.describe_picture(rgb, Path(path).name)
            count += 1
        return count

    def set_picture(self, rgb: np.ndarray, label: str) -> None:
        """The picture that Describe and Read use while there is no camera picture."""
        self.image = (label, rgb)
        self._show_preview(qimage_from_rgb(rgb))

    def describe_picture(self, rgb: np.ndarray, label: str) -> None:
        self.set_picture(rgb, label)
        self._request("describe", rgb, label)

    def _current_picture(self):
        rgb = self.camera.latest
        if rgb is not None:
            return "camera", rgb
        return self.image

    def _request(self, kind: str, rgb: np.ndarray, label: str) -> None:
        self.set_status(f"{'Reading' if kind == 'read' else 'Describing'} {label}…")
        if self.settings.earcons and not self.voice.through_reader:
            from edgecap.audio.tones import TonePlayer

            self.tones = self.tones or TonePlayer()
            self.tones.play(880.0, 0.06)
        if kind == "read":
            self.worker.read_text(rgb, label)
        else:
            self.worker.describe(rgb, label, self.decoding())

    def decoding(self):
        from edgecap.core.decoding import preset

        return preset(self.settings.detail, calibrate=self.settings.calibration)

    def _described(self, job: int, label: str, result) -> None:
        self.show_sentence(result.caption, getattr(result, "confidence", None), label, result.status)
        self.say(result.caption, "caption")
        self.set_status(f"Described {label} in {result.ms:.0f} ms.")

    def _text_read(self, job: int, label: str, text: str) -> None:
        text = text or "No text found."
        self.show_sentence(text, None, f"text in {label}")
        self.confidence.setText("Text read from the picture")
        self.say(text, "caption")
        self.set_status(f"Read the text in {label}.")

    def _model_ready(self, provider: str) -> None:
        if self.status.text() == "Starting.":  # never over a message the user still needs
            self.set_status(f"Ready. The model runs on {provider.replace('ExecutionProvider', '')}.")

    def _failed(self, job: int, label: str, message: str) -> None:
        self.set_status(f"{label}: {message}", speak=True)

    def _show_preview(self, image: QImage) -> None:
        size = self.preview.size()
        self.preview.setPixmap(QPixmap.fromImage(image).scaled(size, Qt.AspectRatioMode.KeepAspectRatio,
                                                               Qt.TransformationMode.SmoothTransformation))

    # --- the camera ----------------------------------------------------------------------------
    def _open_camera(self):
        from edgecap.narration.frames import CameraSource, FrameSourceError

        if self.settings.camera < 0:
            raise FrameSourceError("the camera is turned off in the settings")
        camera = CameraSource(self.settings.camera)
        if not camera.opened:
            camera.close()
            raise FrameSourceError(f"camera {self.settings.camera} cannot be opened (not connected or in use)")
        return camera

    def _make_narrator(self, source, event_log):
        from edgecap.narration.narrate import Narrator
        from edgecap.narration.scene import SceneOptions

        return Narrator(source, self.model.get(), self.decoding(), self.speech, event_log,
                        SceneOptions(semantic_threshold=self.settings.scene_threshold))

    def _camera_state(self, state: str, message: str) -> None:
        self.buttons["retry"].setEnabled(state in ("missing", "ended", "error", "closed"))
        if state == "open":
            self.set_status(f"Camera on ({message}).")
        elif state == "missing":
            self.set_status(f"No camera: {message}. Images still work: Control O opens one; F5 retries the camera.",
                            speak=True)
        elif state in ("ended", "error"):
            self.actions["narrate"].setChecked(False)
            self.set_status(f"{message[:1].upper()}{message[1:]}.", speak=state == "error")
        elif state in ("lost", "back"):
            self.set_status("Camera lost." if state == "lost" else "Camera back.", speak=True)

    def _narrator_event(self, kind: str, text: str, fields: dict) -> None:
        if kind == "caption":
            self.show_sentence(text, fields.get("confidence"), "camera")
        else:
            self.set_status(text)

    def _load_default_model(self):
        from edgecap.core.model import OnnxCaptioner

        return OnnxCaptioner.load(self.settings.model or None, provider=self.settings.provider)

    # --- drag and drop, closing ----------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        data = event.mimeData()
        if data.hasImage() or any(u.isLocalFile() for u in data.urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        data = event.mimeData()
        paths = [u.toLocalFile() for u in data.urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)
        elif data.hasImage():
            self.describe_picture(rgb_from_qimage(QImage(data.imageData())), "dropped image")
        event.acceptProposedAction()

    def closeEvent(self, event) -> None:
        self.camera.close()
        self.worker.close()
        self.speech.close()
        if self.tones:
            self.tones.close()
        event.accept()
