#!/usr/bin/env python3
"""One push button for the narrator: short press describes now, double press reads text,
long press turns narration's voice off and on again.

Runs with the system Python (Raspberry Pi OS ships python3-gpiozero, which drives the Pi 5's
GPIO through lgpio) and talks to `edgecap narrate --control-socket` over its UNIX socket, one
command word per line. Standard library only apart from gpiozero, so it needs no venv.

    edgecap_button.py --pin 17 --socket /run/edgecap/control.sock
    edgecap_button.py --stdin ...   # no GPIO: type s (short), d (double), l (long) per line
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time

log = logging.getLogger("edgecap-button")

DOUBLE_WINDOW = 0.4  # seconds after a release within which a second press makes a double press
HOLD_SECONDS = 1.0  # a press this long is a long press


class PressDecoder:
    """Turns presses and releases (with their times) into gestures: short, double, long.

    Pure logic so it can be tested without a GPIO: feed press()/release(), call tick() with the
    time now; each finished gesture goes to `on_gesture`.
    """

    def __init__(self, on_gesture, double_window: float = DOUBLE_WINDOW, hold: float = HOLD_SECONDS):
        self.on_gesture = on_gesture
        self.double_window = double_window
        self.hold = hold
        self._down_at: float | None = None
        self._held = False
        self._pending_release: float | None = None  # a short press waiting to see if a second follows

    def press(self, t: float) -> None:
        self._down_at = t
        self._held = False

    def release(self, t: float) -> None:
        if self._down_at is None:
            return
        self.tick(t)
        down, self._down_at = self._down_at, None
        if self._held or t - down >= self.hold:
            if not self._held:
                self.on_gesture("long")
            self._held = False
            return
        if self._pending_release is not None:
            self._pending_release = None
            self.on_gesture("double")
        else:
            self._pending_release = t

    def tick(self, t: float) -> None:
        if self._down_at is not None and not self._held and t - self._down_at >= self.hold:
            self._held = True
            self._pending_release = None
            self.on_gesture("long")
        if self._pending_release is not None and self._down_at is None and t - self._pending_release > self.double_window:
            self._pending_release = None
            self.on_gesture("short")


class NarratorLink:
    """Sends command words to the narrator; remembers whether its voice is muted."""

    def __init__(self, path: str, timeout: float = 2.0):
        self.path = path
        self.timeout = timeout
        self.muted = False

    def send(self, word: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(word.encode() + b"\n")
                return s.recv(1024).decode(errors="replace").strip()
        except OSError as exc:
            return f"error: narrator not reachable at {self.path} ({exc})"

    def gesture(self, kind: str) -> None:
        if kind == "short":
            self._say("describe")
        elif kind == "double":
            # Reading text is a narrator command only where text reading is built in; otherwise
            # repeat the last sentence rather than do nothing.
            if self._say("read").startswith("error"):
                self._say("repeat")
        elif kind == "long":
            self.muted = not self.muted
            self._say("mute" if self.muted else "unmute")

    def _say(self, word: str) -> str:
        reply = self.send(word)
        (log.warning if reply.startswith("error") else log.info)("%s -> %s", word, reply)
        return reply


def run_gpio(pin: int, decoder: PressDecoder) -> None:
    from gpiozero import Button  # noqa: PLC0415 - only on boards with a GPIO

    lock = threading.Lock()
    button = Button(pin, pull_up=True, bounce_time=0.03)

    def pressed():
        with lock:
            decoder.press(time.monotonic())

    def released():
        with lock:
            decoder.release(time.monotonic())

    button.when_pressed = pressed
    button.when_released = released
    while True:
        time.sleep(0.05)
        with lock:
            decoder.tick(time.monotonic())


def run_stdin(link: NarratorLink) -> None:
    names = {"s": "short", "d": "double", "l": "long"}
    for line in sys.stdin:
        kind = names.get(line.strip()[:1].lower())
        if kind:
            link.gesture(kind)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pin", type=int, default=17, help="BCM number of the GPIO pin the button pulls to ground")
    p.add_argument("--socket", default="/run/edgecap/control.sock", help="the narrator's control socket")
    p.add_argument("--stdin", action="store_true", help="read s/d/l lines instead of a GPIO pin")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="edgecap-button: %(message)s")
    link = NarratorLink(args.socket)
    if args.stdin:
        run_stdin(link)
        return 0
    try:
        run_gpio(args.pin, PressDecoder(link.gesture))
    except ImportError:
        print("edgecap-button: error: gpiozero is not installed (apt-get install python3-gpiozero)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
