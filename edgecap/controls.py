"""Driving narration by hand: keys in the terminal, or command words over a local UNIX socket.

Both turn input into the same command words and hand them to one callback, so a GPIO
button script can do everything the keyboard does:

    echo describe | socat - UNIX-CONNECT:/run/edgecap.sock
"""
from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger("edgecap")

COMMANDS = ("describe", "repeat", "read", "stop", "faster", "slower", "mute", "unmute", "quit")
KEYS = {" ": "describe", "\n": "describe", "\r": "describe", "r": "repeat", "s": "stop", "+": "faster",
        "=": "faster", "-": "slower", "_": "slower", "m": "mute", "u": "unmute", "q": "quit", "t": "read",
        "\x1b": "quit"}
KEY_HELP = "keys: space describe, r repeat, t read text, s stop, + faster, - slower, m mute, u unmute, q quit"

Handler = Callable[[str], None]


def parse_command(line: str) -> str | None:
    word = line.strip().lower()
    return word if word in COMMANDS else None


class KeyboardControl:
    """Single key presses from a terminal (cbreak mode, restored on close). Does nothing
    unless stdin is a TTY, so narration in scripts and pipes is unaffected."""

    def __init__(self, handler: Handler, stream=None):
        self.handler = handler
        self.stream = stream or sys.stdin
        self._saved = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self._thread is not None

    def start(self) -> bool:
        try:
            if not self.stream.isatty():
                return False
            import termios
            import tty

            fd = self.stream.fileno()
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        except (ImportError, OSError, ValueError, AttributeError):
            return False
        self._thread = threading.Thread(target=self._run, name="edgecap-keys", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        fd = self.stream.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(fd, 16)
            except OSError:
                return
            if not data:
                return
            for ch in data.decode(errors="ignore"):
                command = KEYS.get(ch.lower())
                if command:
                    self.handler(command)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None


class SocketControl:
    """A UNIX stream socket; each client sends one command word per line and gets
    "ok" or "error: ..." back for each."""

    def __init__(self, path: str | Path, handler: Handler):
        self.path = Path(path)
        self.handler = handler
        self._stop = threading.Event()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            if not self.path.is_socket():
                raise OSError(f"{self.path} exists and is not a socket")
            self.path.unlink()  # left over from a run that did not exit cleanly
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        os.chmod(self.path, 0o660)
        server.listen(4)
        server.settimeout(0.2)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="edgecap-socket", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        buffer = b""
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(1024)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    command = parse_command(line.decode(errors="replace"))
                    reply = b"ok\n" if command else b"error: unknown command (" + ", ".join(COMMANDS).encode() + b")\n"
                    if command:
                        self.handler(command)
                    try:
                        conn.sendall(reply)
                    except OSError:
                        return
                if len(buffer) > 4096:  # not a command channel: hang up
                    return

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
        if self._thread is not None:
            self._thread.join(timeout=1)
        try:
            if self.path.is_socket():
                self.path.unlink()
        except OSError:
            pass


def send_command(path: str | Path, command: str, timeout: float = 2.0) -> str:
    """Send one command word to a running narrator; returns its reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        return s.recv(1024).decode().strip()
