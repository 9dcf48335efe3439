"""Every action of the app: its label, keys and a description a screen reader can say.

One table feeds the window (buttons, menus, shortcuts), the help text and the README's
keyboard map, so they cannot disagree. Keys are QKeySequence strings; no Qt import here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    id: str
    label: str
    keys: tuple[str, ...]
    description: str
    checkable: bool = False
    button: bool = True  # also a button in the window (all are in the menus)


ACTIONS: tuple[Action, ...] = (
    Action("describe", "Describe now", ("Space",),
           "Describe what the camera sees now, or the open image when there is no camera."),
    Action("read", "Read text", ("T",), "Read aloud the text in the camera view or the open image."),
    Action("narrate", "Narrate", ("N",),
           "Turn narration on or off: the camera view is described whenever it changes.", checkable=True),
    Action("repeat", "Repeat", ("R",), "Say the last description again."),
    Action("stop", "Stop speech", ("S", "Esc"), "Stop speaking now."),
    Action("detail", "Detailed", ("D",), "Switch between brief and detailed descriptions.", checkable=True),
    Action("slower", "Slower", ("-",), "Speak more slowly."),
    Action("faster", "Faster", ("+", "="), "Speak faster."),
    Action("open", "Open image…", ("Ctrl+O",), "Choose a photo file to describe."),
    Action("paste", "Paste image", ("Ctrl+V",), "Describe the image on the clipboard."),
    Action("copy", "Copy history", ("Ctrl+Shift+C",),
           "Copy the selected history entries, or all of them, with their times."),
    Action("retry", "Retry camera", ("F5",), "Try to open the camera again."),
    Action("settings", "Settings…", ("Ctrl+,",), "Camera, voice, who speaks, detail, theme and more."),
    Action("keys", "Keyboard shortcuts", ("F1",), "Say and show the list of keys.", button=False),
    Action("quit", "Quit", ("Ctrl+Q",), "Close edgecap; camera and speech stop.", button=False),
)

BY_ID = {a.id: a for a in ACTIONS}


def spoken_keys(action: Action) -> str:
    names = {"Space": "space", "Esc": "escape", "+": "plus", "-": "minus", "=": "equals"}
    return " or ".join(names.get(k, k.replace("+", " ") if len(k) > 1 else k) for k in action.keys)


def help_text() -> str:
    """One line per action, for the help dialog and the screen reader."""
    return "\n".join(f"{a.label.rstrip('…')}: {spoken_keys(a)}" for a in ACTIONS)


def markdown_table() -> str:
    """The README's keyboard map (tests/test_app.py checks the README still says this)."""
    rows = ["| Key | Action |", "|---|---|"]
    rows += [f"| {' / '.join(f'`{k}`' for k in a.keys)} | {a.label.rstrip('…')}{' on/off' if a.checkable else ''}"
             f"{' (once text reading is installed)' if a.id == 'read' else ''} |" for a in ACTIONS]
    return "\n".join(rows)
