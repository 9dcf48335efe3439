"""The settings dialog: every field labelled, so a screen reader says what it sets."""
from __future__ import annotations

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QSpinBox,
                               QVBoxLayout)

from edgecap.app.settings import DETAILS, PROVIDERS, SENSITIVITY, SPEAKERS, VOICES, AppSettings


def _combo(values, current, names=None) -> QComboBox:
    box = QComboBox()
    for value in values:
        box.addItem((names or {}).get(value, value), value)
    box.setCurrentIndex(max(0, box.findData(current)))
    return box


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("edgecap settings")
        self.setAccessibleName("edgecap settings")
        s = settings
        self.base = settings
        self.camera = QSpinBox()
        self.camera.setRange(-1, 9)
        self.camera.setSpecialValueText("No camera")
        self.camera.setValue(s.camera)
        self.speaker = _combo(SPEAKERS, s.speaker, SPEAKERS)
        self.voice = _combo(VOICES, s.voice, {"auto": "automatic", "none": "none (text only)"})
        self.rate = QSpinBox()
        self.rate.setRange(80, 450)
        self.rate.setSingleStep(25)
        self.rate.setSuffix(" words per minute")
        self.rate.setValue(s.rate)
        self.detail = _combo(DETAILS, s.detail)
        self.calibration = QCheckBox("Calibrated decoding (fewer invented objects)")
        self.calibration.setChecked(s.calibration)
        self.provider = _combo(PROVIDERS, s.provider)
        self.sensitivity = _combo(SENSITIVITY, s.sensitivity)
        self.earcons = QCheckBox("Earcons: a short tone when a description starts")
        self.earcons.setChecked(s.earcons)
        self.high_contrast = QCheckBox("High contrast theme")
        self.high_contrast.setChecked(s.high_contrast)
        self.font_size = QSpinBox()
        self.font_size.setRange(10, 72)
        self.font_size.setSuffix(" point")
        self.font_size.setValue(s.font_size)

        form = QFormLayout()
        rows = [
            ("&Camera", self.camera, "Camera number; No camera turns the camera off."),
            ("&Who speaks", self.speaker,
             "edgecap's own voice, or announcements through your screen reader so you hear one voice."),
            ("&Voice", self.voice, "The speech engine edgecap speaks with."),
            ("Speech &rate", self.rate, "How fast edgecap speaks."),
            ("&Detail", self.detail, "Brief or detailed descriptions."),
            (None, self.calibration, "Calibration keeps descriptions closer to what is in the picture."),
            ("&Provider", self.provider, "Where the model runs; takes effect after a restart."),
            ("Narration &sensitivity", self.sensitivity, "How big a change of view is described during narration."),
            (None, self.earcons, "Play a short tone when a description starts."),
            (None, self.high_contrast, "Yellow and white text on black."),
            ("&Font size", self.font_size, "Size of the description text."),
        ]
        for label, widget, description in rows:
            name = label.replace("&", "") if label else widget.text()
            widget.setAccessibleName(name)
            widget.setAccessibleDescription(description)
            widget.setToolTip(description)
            if label:
                buddy = QLabel(label)
                buddy.setBuddy(widget)
                form.addRow(buddy, widget)
            else:
                form.addRow(widget)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def result_settings(self) -> AppSettings:
        return self.base.with_changes(
            camera=self.camera.value(), speaker=self.speaker.currentData(), voice=self.voice.currentData(),
            rate=self.rate.value(), detail=self.detail.currentData(), calibration=self.calibration.isChecked(),
            provider=self.provider.currentData(), sensitivity=self.sensitivity.currentData(),
            earcons=self.earcons.isChecked(), high_contrast=self.high_contrast.isChecked(),
            font_size=self.font_size.value())
