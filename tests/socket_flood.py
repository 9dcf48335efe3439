"""Idle clients that hold a control socket's connection slots: the flood the hardening test and
bench/offline.py both throw at `edgecap narrate --control-socket`."""
from __future__ import annotations

import socket
import time


def idle_clients(path, count: int, alive) -> list[socket.socket]:
    """Connect up to `count` clients that never speak, while `alive()` holds; the caller closes them."""
    idle: list[socket.socket] = []
    while len(idle) < count and alive():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            idle.append(s)
        except BlockingIOError:
            s.close()
            time.sleep(0.01)
    return idle
