"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str, mode: int = 0o644, *, durable: bool = True) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`. `durable` fsyncs the data
    first, so the new content also survives a power cut (not needed for status files)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode() if isinstance(data, str) else data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_private(path: str | os.PathLike, data: bytes | str) -> None:
    """A secret (keys, passwords): mode 0600 from the moment it exists."""
    write_atomic(path, data, 0o600)
