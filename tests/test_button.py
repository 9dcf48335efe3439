"""The Raspberry Pi push-button helper: press timings to gestures, gestures to narrator commands."""
import importlib.util
import time
from pathlib import Path

from edgecap.narration.controls import COMMANDS, SocketControl

SCRIPT = Path(__file__).resolve().parents[1] / "packaging" / "raspberrypi" / "edgecap_button.py"
spec = importlib.util.spec_from_file_location("edgecap_button", SCRIPT)
button = importlib.util.module_from_spec(spec)
spec.loader.exec_module(button)


def gestures(events, end):
    """Feed (time, 'down'|'up') events, ticking every 10 ms until `end`; the gestures seen."""
    seen = []
    decoder = button.PressDecoder(seen.append, double_window=0.4, hold=1.0)
    pending = sorted(events)
    t = 0.0
    while t <= end:
        while pending and pending[0][0] <= t:
            when, what = pending.pop(0)
            (decoder.press if what == "down" else decoder.release)(when)
        decoder.tick(t)
        t = round(t + 0.01, 3)
    return seen


def test_press_timings_become_short_double_and_long_gestures():
    assert gestures([(0.0, "down"), (0.1, "up")], 1.0) == ["short"]
    assert gestures([(0.0, "down"), (0.1, "up"), (0.3, "down"), (0.4, "up")], 1.5) == ["double"]
    assert gestures([(0.0, "down"), (1.5, "up")], 2.0) == ["long"]  # said while still held, once
    assert gestures([(0.0, "down"), (0.1, "up"), (0.8, "down"), (0.9, "up")], 2.0) == ["short", "short"]


def test_gestures_reach_the_narrator_over_its_socket(tmp_path):
    received = []
    server = SocketControl(tmp_path / "control.sock", received.append)
    server.start()
    try:
        link = button.NarratorLink(str(tmp_path / "control.sock"))
        for kind in ("short", "double", "long", "long"):
            link.gesture(kind)
        time.sleep(0.1)
    finally:
        server.close()
    # Where the narrator has no "read" command the double press falls back to "repeat".
    assert received == ["describe", "read" if "read" in COMMANDS else "repeat", "mute", "unmute"]
    assert button.NarratorLink(str(tmp_path / "gone.sock")).send("describe").startswith("error: narrator not reachable")
