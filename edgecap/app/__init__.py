"""`edgecap app`: the desktop window (Qt 6, PySide6: `pip install "edgecap[app]"`).

This module is imported by the core CLI and must not import Qt; main.py does.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

INSTALL_HINT = 'edgecap app needs PySide6: pip install "edgecap[app]" (or pip install PySide6-Essentials)'


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("app", help="the desktop window (screen-reader friendly)",
                              description="Open the edgecap window: describe the camera view and photos aloud.")
    p.add_argument("images", nargs="*", type=Path, help="photos to describe at start")
    p.add_argument("--screenshot", type=Path, metavar="OUT.png",
                   help="render the window to this PNG (after describing --image) and exit")
    p.add_argument("--image", type=Path, metavar="PHOTO",
                   help="the picture Describe now uses while there is no camera (with --screenshot: described first)")
    p.add_argument("--camera", type=int, metavar="N", help="camera number for this run (-1: none)")
    p.add_argument("--settings", type=Path, metavar="FILE", help="settings file (default: the platform config folder)")
    p.set_defaults(func=cmd_app)


def cmd_app(args) -> int:
    try:
        import PySide6  # noqa: F401
    except ImportError:
        print(f"edgecap: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if sys.platform.startswith("linux") and not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY",
                                                                                "QT_QPA_PLATFORM")):
        if args.screenshot is None:
            print("edgecap: error: edgecap app needs a desktop session (DISPLAY and WAYLAND_DISPLAY are not set)",
                  file=sys.stderr)
            return 2
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a screenshot can still be rendered without a display
    from edgecap.app.main import run

    return run(args)
