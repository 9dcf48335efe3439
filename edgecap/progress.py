"""A one-line progress bar on stderr, shared by `edgecap eval` and `edgecap describe`."""
from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, total: int, label: str, enabled: bool | None = None):
        self.total, self.label, self.start = total, label, time.time()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.time() - self.start, 1e-6)
        eta = (self.total - done) / rate if rate > 0 else 0
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                         f"{rate:.1f} img/s eta {eta:.0f} s ")
        sys.stderr.flush()
        if done >= self.total:
            sys.stderr.write("\n")
