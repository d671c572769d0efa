"""Progress for long steps: a bar redrawn in place on a terminal, a line per tenth otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time

WIDTH = 30


class Progress:
    def __init__(self, label: str, total: int, *, quiet: bool = False, stream=None):
        self.label, self.total, self.quiet = label, max(1, total), quiet
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._shown = -1

    def update(self, done: int) -> None:
        if self.quiet:
            return
        done = min(done, self.total)
        if self.tty:
            filled = WIDTH * done // self.total
            bar = "#" * filled + "." * (WIDTH - filled)
            elapsed = time.monotonic() - self.started
            self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {elapsed:.0f}s")
            self.stream.flush()
            return
        tenth = 10 * done // self.total
        if tenth > self._shown:
            self._shown = tenth
            print(f"{self.label}: {done}/{self.total} ({time.monotonic() - self.started:.0f}s)", file=self.stream)

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
