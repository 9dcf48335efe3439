"""Driving narration by hand: keys in the terminal, or command words over a local UNIX socket.

Both turn input into the same command words and hand them to one callback, so a GPIO
button script can do everything the keyboard does:

    echo describe | socat - UNIX-CONNECT:/run/edgecap.sock
"""
from __future__ import annotations

import logging
import os
import select
import selectors
import socket
import sys
import threading
import time
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
    "ok" or "error: ..." back for each.

    One thread serves every client with a selector, so idle or hostile clients cost a file
    descriptor each, never a thread: at most `max_clients` are kept (the one idle longest
    is hung up on to make room), a client silent for `idle_timeout` seconds is hung up on,
    a line longer than MAX_LINE ends the connection, and no error ends the accept loop.
    """

    MAX_LINE = 256
    LISTEN_BACKLOG = 64

    def __init__(self, path: str | Path, handler: Handler, max_clients: int = 16, idle_timeout: float = 10.0):
        self.path = Path(path)
        self.handler = handler
        self.max_clients, self.idle_timeout = max_clients, idle_timeout
        self.stats = {"accepted": 0, "evicted": 0, "timed_out": 0, "commands": 0, "loop_errors": 0}
        self._stop = threading.Event()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[socket.socket, list] = {}  # conn -> [buffer, last activity]

    @property
    def clients(self) -> int:
        return len(self._clients)

    def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            if not self.path.is_socket():
                raise OSError(f"{self.path} exists and is not a socket")
            self.path.unlink()  # left over from a run that did not exit cleanly
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        os.chmod(self.path, 0o660)
        server.listen(self.LISTEN_BACKLOG)
        server.setblocking(False)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="edgecap-socket", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._server, selectors.EVENT_READ)
            while not self._stop.is_set():
                try:
                    self._serve_once(sel)
                except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                    self.stats["loop_errors"] += 1
                    log.debug("control socket: %s", exc)
                    self._stop.wait(0.05)  # e.g. out of file descriptors: let clients go first
            for conn in list(self._clients):
                self._drop(sel, conn)

    def _serve_once(self, sel: selectors.BaseSelector) -> None:
        for key, _ in sel.select(timeout=0.2):
            if key.fileobj is self._server:
                self._accept(sel)
            else:
                self._read(sel, key.fileobj)
        now = time.monotonic()
        for conn, (_, last) in list(self._clients.items()):
            if now - last > self.idle_timeout:
                self.stats["timed_out"] += 1
                self._drop(sel, conn)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(self.LISTEN_BACKLOG):
            try:
                conn, _ = self._server.accept()
            except (BlockingIOError, InterruptedError):
                return
            if len(self._clients) >= self.max_clients:
                oldest = min(self._clients, key=lambda c: self._clients[c][1])
                self.stats["evicted"] += 1
                self._drop(sel, oldest, b"error: too many clients\n")
            conn.setblocking(False)
            self._clients[conn] = [b"", time.monotonic()]
            sel.register(conn, selectors.EVENT_READ)
            self.stats["accepted"] += 1

    def _read(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        try:
            data = conn.recv(1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sel, conn)
            return
        state = self._clients[conn]
        state[0] += data
        state[1] = time.monotonic()
        while b"\n" in state[0]:
            line, state[0] = state[0].split(b"\n", 1)
            if not line.strip():
                continue
            command = parse_command(line[:self.MAX_LINE].decode(errors="replace"))
            if command:
                self.stats["commands"] += 1
                self.handler(command)
            reply = b"ok\n" if command else b"error: unknown command (" + ", ".join(COMMANDS).encode() + b")\n"
            if not self._send(conn, reply):
                self._drop(sel, conn)
                return
        if len(state[0]) > self.MAX_LINE:  # not a command channel: hang up
            self._drop(sel, conn, b"error: line too long\n")

    @staticmethod
    def _send(conn: socket.socket, data: bytes) -> bool:
        try:
            return conn.send(data) == len(data)  # a client that does not read its replies is dropped
        except OSError:
            return False

    def _drop(self, sel: selectors.BaseSelector, conn: socket.socket, farewell: bytes = b"") -> None:
        if farewell:
            self._send(conn, farewell)
        self._clients.pop(conn, None)
        try:
            sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._server is not None:
            self._server.close()
        try:
            if self.path.is_socket():
                self.path.unlink()
        except OSError:
            pass


def send_command(path: str | Path, command: str, timeout: float = 2.0) -> str:
    """Send one command word to a running narrator; returns its reply line."""
    deadline = time.monotonic() + timeout
    while True:  # a full listen backlog (a flood of clients) answers EAGAIN: try again until timeout
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            break
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with s:
        s.sendall(command.encode() + b"\n")
        return s.recv(1024).decode().strip()
