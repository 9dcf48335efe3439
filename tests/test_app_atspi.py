"""The screen reader's view of the app, for real: under Xvfb with a D-Bus session and an
AT-SPI bus, the app runs as its own process with QT_ACCESSIBILITY=1 and a separate
process (tests/atspi_walk.py, under the system Python with pyatspi) walks its tree,
presses "Describe now" and quits through the menu, as a screen reader user would.

Needs Debian packages xvfb, dbus, at-spi2-core, python3-pyatspi and Qt's xcb libraries
(see .ci/app-packages.txt); skips, saying which is missing, where they are not there.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from conftest import ASSETS, REPO  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
BUS_LAUNCHER = next((p for p in ("/usr/libexec/at-spi-bus-launcher", "/usr/lib/at-spi2-core/at-spi-bus-launcher")
                     if Path(p).exists()), None)
NOTHING_YET = "Nothing described yet. Press Space to describe."


def _need(condition, why):
    if not condition:
        pytest.skip(why)


def _read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().decode().strip() if ready else ""


@pytest.fixture
def desktop(tmp_path):
    """(env, stop) of a private X display and session bus with an AT-SPI bus on it."""
    _need(shutil.which("Xvfb"), "Xvfb is not installed (apt-get install xvfb)")
    _need(shutil.which("dbus-daemon"), "dbus-daemon is not installed (apt-get install dbus)")
    _need(BUS_LAUNCHER, "at-spi-bus-launcher is not installed (apt-get install at-spi2-core)")
    _need(os.path.exists(SYSTEM_PYTHON) and subprocess.run([SYSTEM_PYTHON, "-c", "import pyatspi"],
                                                          capture_output=True).returncode == 0,
          "pyatspi is not importable by /usr/bin/python3 (apt-get install python3-pyatspi)")
    procs = []

    def start(cmd, env=None, **kwargs):
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, **kwargs)
        procs.append(proc)
        return proc

    try:
        xvfb = start(["Xvfb", "-displayfd", "1", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        display = _read_line(xvfb.stdout, 10)
        _need(display.isdigit(), "Xvfb did not start")
        bus = start(["dbus-daemon", "--session", "--nofork", "--print-address=1"], stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL)
        address = _read_line(bus.stdout, 10)
        _need(address, "the D-Bus session bus did not start")
        env = {**os.environ, "DISPLAY": f":{display}", "DBUS_SESSION_BUS_ADDRESS": address,
               "XDG_RUNTIME_DIR": str(tmp_path), "NO_AT_BRIDGE": "0"}
        env.pop("AT_SPI_BUS_ADDRESS", None)
        start([BUS_LAUNCHER, "--launch-immediately"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["dbus-send", "--session", "--print-reply", "--dest=org.a11y.Bus", "/org/a11y/bus",
                              "org.a11y.Bus.GetAddress"], env=env, capture_output=True).returncode != 0:
            _need(time.monotonic() < deadline, "the AT-SPI bus did not start")
            time.sleep(0.2)
        yield env
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_app(env, tmp_path, *args):
    settings = tmp_path / "app.json"
    settings.write_text(json.dumps({"voice": "none", "earcons": False}))
    app_env = {**env, "QT_QPA_PLATFORM": "xcb", "QT_ACCESSIBILITY": "1", "QT_LINUX_ACCESSIBILITY_ALWAYS_ON": "1",
               "EDGECAP_APP_CONFIG": str(settings)}
    log = open(tmp_path / "app.log", "w+")  # noqa: SIM115 - read after the app ends
    proc = subprocess.Popen([sys.executable, "-m", "edgecap", "app", "--camera", "-1", *args], cwd=REPO,
                            env=app_env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _skip_if_no_xcb(proc, log):
    if proc.poll() is not None:
        log.seek(0)
        text = log.read()
        _need("platform plugin" not in text, f"Qt's xcb platform cannot load here: {text.strip()[-300:]}")
        pytest.fail(f"the app exited early ({proc.returncode}): {text[-2000:]}")


def test_the_screen_reader_sees_every_control_and_hears_describe(desktop, tmp_path):
    from edgecap.app.keymap import ACTIONS
    from edgecap.app.workers import SharedCaptioner, spoken_description
    from edgecap.core.decoding import preset
    from edgecap.core.image import read_image
    from edgecap.core.model import OnnxCaptioner

    app, log = start_app(desktop, tmp_path, "--image", str(ASSETS / "chelsea.jpg"))
    try:
        time.sleep(1.0)
        _skip_if_no_xcb(app, log)
        out = tmp_path / "walk.json"
        walker = subprocess.run([SYSTEM_PYTHON, str(REPO / "tests" / "atspi_walk.py"), str(out)], env=desktop,
                                capture_output=True, text=True, timeout=180)
        assert walker.returncode == 0, walker.stderr
        assert app.wait(20) == 0  # "Quit" pressed through AT-SPI closed it cleanly
    finally:
        if app.poll() is None:
            app.kill()
    seen = json.loads(out.read_text())
    nodes = seen["tree"]
    by_name = {(n["role"], n["name"]): n for n in nodes}
    assert ("frame", "edgecap") in by_name
    for action in (a for a in ACTIONS if a.button):
        role = "check box" if action.checkable else "push button"
        node = by_name.get((role, action.label.rstrip("…")))
        assert node is not None, f"no {role} named {action.label!r}"
        assert node["description"], f"{action.label} has no description"
        assert ("menu item", action.label) in by_name
    assert by_name[("list", "History")]["focusable"]
    assert ("image", "Picture preview") in by_name
    unnamed = [n for n in nodes if n["focusable"] and n["enabled"] and not n["name"].strip()]
    assert not unnamed, f"focusable without a name: {unnamed}"
    # Describe, pressed through AT-SPI, changed what the reader reads.
    expected = spoken_description(SharedCaptioner(OnnxCaptioner.load(provider="cpu")), read_image(ASSETS / "chelsea.jpg"),
                                  preset("brief"))
    assert seen["before"]["name"] == NOTHING_YET
    assert seen["after"]["name"] == expected.caption
    assert seen["after"]["text"] in (None, expected.caption)  # Qt gives labels no AT-SPI Text interface today
    assert expected.caption in seen["history"][0]
    # With no speech engine (the settings say voice "none") the screen reader is the voice:
    # the sentence went out on the AT-SPI bus as an announcement for Orca to say.
    assert expected.caption in seen["announcements"]
    assert ["label", expected.caption] in seen["name_changes"]  # a screen reader is told the label changed


def test_a_real_window_screenshot_under_xvfb(desktop, tmp_path):
    from PySide6.QtGui import QImage

    out = tmp_path / "window.png"
    app, log = start_app(desktop, tmp_path, "--screenshot", str(out), "--image", str(ASSETS / "coffee.jpg"))
    code = app.wait(180)
    _skip_if_no_xcb(app, log) if code != 0 else None
    assert code == 0
    image = QImage(str(out))
    assert image.width() >= 800 and image.height() >= 600
    colours = {image.pixel(x, y) for x in range(0, image.width(), 37) for y in range(0, image.height(), 29)}
    assert len(colours) > 50  # a photo and text, not a blank grab
