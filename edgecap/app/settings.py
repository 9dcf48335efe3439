"""The app's settings: one dataclass, saved per user as JSON in the platform config folder."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

log = logging.getLogger("edgecap")

SPEAKERS = {"edgecap": "edgecap's own voice", "screen_reader": "my screen reader"}
VOICES = ("auto", "pyttsx3", "espeak", "none")
DETAILS = ("brief", "detailed")
# Narration sensitivity -> the scene detector's semantic threshold (lower: new scenes sooner).
# "medium" is SceneOptions' measured default; see edgecap/narration/scene.py for what the distances mean.
SENSITIVITY = {"low": 0.40, "medium": 0.30, "high": 0.22}
PROVIDERS = ("auto", "cpu", "cuda", "tensorrt", "openvino", "qnn", "coreml")


@dataclass(frozen=True)
class AppSettings:
    camera: int = 0  # OpenCV camera index; -1: no camera
    voice: str = "auto"  # speech engine, as `edgecap narrate --speech`
    rate: int = 175  # words per minute
    speaker: str = "edgecap"  # who speaks: edgecap | screen_reader
    detail: str = "brief"
    calibration: bool = True
    provider: str = "auto"
    sensitivity: str = "medium"
    earcons: bool = True  # a short tone when a description starts
    high_contrast: bool = True
    font_size: int = 26  # points, the description text; the rest of the window is scaled from it
    model: str = ""  # a bundle folder; empty: the shipped model

    def __post_init__(self):
        checks = {"voice": VOICES, "speaker": SPEAKERS, "detail": DETAILS, "sensitivity": SENSITIVITY,
                  "provider": PROVIDERS}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if not 80 <= self.rate <= 450:
            raise ValueError(f"rate must be 80-450 words per minute, not {self.rate}")
        if not 10 <= self.font_size <= 72:
            raise ValueError(f"font_size must be 10-72 points, not {self.font_size}")

    @property
    def scene_threshold(self) -> float:
        return SENSITIVITY[self.sensitivity]

    def with_changes(self, **changes) -> "AppSettings":
        return replace(self, **changes)


def config_file() -> Path:
    """$EDGECAP_APP_CONFIG, else <platform config folder>/edgecap/app.json (Qt decides where:
    ~/.config on Linux, %LOCALAPPDATA% on Windows, ~/Library/Preferences on macOS)."""
    env = os.environ.get("EDGECAP_APP_CONFIG")
    if env:
        return Path(env)
    from PySide6.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation)
    return Path(base or Path.home() / ".config") / "edgecap" / "app.json"


def load_settings(path: Path | None = None) -> tuple[AppSettings, str | None]:
    """The saved settings and, when some could not be used, one line saying why."""
    path = Path(path) if path else config_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AppSettings(), None
    except (OSError, ValueError) as exc:
        return AppSettings(), f"settings file {path} unreadable ({exc}); using defaults"
    if not isinstance(data, dict):
        return AppSettings(), f"settings file {path} is not a JSON object; using defaults"
    known = {f.name for f in fields(AppSettings)}
    settings, problems = AppSettings(), []
    for key, value in data.items():
        if key not in known:
            continue  # written by a newer version: keep going
        expected = type(getattr(settings, key))
        if type(value) is not expected and not (expected is float and type(value) is int):
            problems.append(f"{key} should be {expected.__name__}, not {value!r}")
            continue
        try:
            settings = replace(settings, **{key: value})
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
    return settings, (f"settings file {path}: {'; '.join(problems)}; using defaults for those" if problems else None)


def save_settings(settings: AppSettings, path: Path | None = None) -> Path:
    path = Path(path) if path else config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(settings), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # never leave a half-written file behind
    return path
