"""Starting the window: settings, the Qt application, and `--screenshot`."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QApplication

from edgecap.app.settings import config_file, load_settings
from edgecap.app.window import MainWindow
from edgecap.core.image import ImageError, read_image

ICON = Path(__file__).resolve().parent / "resources" / "edgecap.svg"


def application() -> QApplication:
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("edgecap")
    app.setApplicationDisplayName("edgecap")
    app.setDesktopFileName("edgecap")  # matches packaging/desktop/edgecap.desktop
    if ICON.exists():
        app.setWindowIcon(QIcon(str(ICON)))
    return app


def wait_until(condition, timeout: float) -> bool:
    """Run the event loop until condition() holds (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        QCoreApplication.processEvents()
        time.sleep(0.01)
    return True


def run(args) -> int:
    app = application()
    path = args.settings or config_file()
    settings, problem = load_settings(path)
    if args.camera is not None:
        settings = settings.with_changes(camera=args.camera)
    elif args.screenshot is not None:
        settings = settings.with_changes(camera=-1)  # a screenshot shows the photo, not whatever the camera sees
    window = MainWindow(settings, settings_path=path)
    if problem:
        window.set_status(problem, speak=True)
    window.resize(1000, 760)
    window.show()
    window.caption.setFocus()
    bad = 0
    if args.image is not None:
        try:
            window.set_picture(read_image(args.image), args.image.name)
        except ImageError as exc:
            window.set_status(str(exc), speak=True)
            print(f"edgecap: error: {exc}", file=sys.stderr)
            bad += 1
        else:
            if args.screenshot is not None:
                window.on_describe()
    opened = window.open_paths(args.images)
    bad += len(args.images) - opened
    if args.screenshot is None:
        code = app.exec()
        return code or (1 if bad else 0)
    expect = opened + (1 if args.image is not None and not bad else 0)
    return screenshot(app, window, args.screenshot, expect=expect, bad=bad)


def screenshot(app, window: MainWindow, out: Path, expect: int, bad: int) -> int:
    """Wait for the descriptions, grab the window as the display server shows it, save, exit."""
    ok = wait_until(lambda: window.history.count() >= expect and window.worker.busy == 0, 120)
    wait_until(lambda: False, 0.3)  # let the last repaint land
    if QGuiApplication.platformName() == "offscreen":
        pixmap = window.grab()
    else:  # what the X server (or compositor) shows, not a re-render of the widget
        pixmap = window.screen().grabWindow(window.winId())
    saved = pixmap.save(str(out))
    window.close()
    QTimer.singleShot(0, app.quit)
    app.processEvents()
    if not saved:
        print(f"edgecap: error: {out}: could not write the screenshot", file=sys.stderr)
        return 2
    if not ok:
        print("edgecap: error: the description did not finish within 120 s", file=sys.stderr)
        return 1
    return 1 if bad else 0
