"""State files: written atomically (a reader, or a crash, sees the old file or the new one, never half
of one) and read defensively (a damaged file is reported and set aside, and the node recovers
without it: a torn file must never become a crash at every start)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("blockfl.files")
T = TypeVar("T")
DAMAGED_SUFFIX = ".damaged"
TAIL_BLOCK = 64 * 1024  # recover_lines reads a log's tail in blocks of this size
MAX_FRAGMENT = 1 << 20  # and sets aside at most this much of a torn last line


def write_atomic(path: str | os.PathLike, data: bytes | str, mode: int = 0o644, *, durable: bool = True) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`. `durable` fsyncs the data
    before the rename and the directory after it, so the new content also survives a power cut
    (status files skip it: they are rewritten every fraction of a second)."""
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
    if durable:
        _fsync_directory(path.parent)


def write_private(path: str | os.PathLike, data: bytes | str) -> None:
    """A secret (keys, passwords): mode 0600 from the moment it exists."""
    write_atomic(path, data, 0o600)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside(path: str | os.PathLike, why: str) -> Path:
    """A damaged state file: renamed to NAME.damaged (replacing an older one) for a person to look
    at, and reported as a structured warning; the caller goes on as if it were absent."""
    path = Path(path)
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, target)
    fields = {"file": str(path), "why": why[:200], "set_aside_as": target.name}
    log.warning("damaged state file set aside", extra={"fields": fields})
    return target


def read_state(path: str | os.PathLike, parse: Callable[[bytes], T]) -> T | None:
    """A state file's content as `parse` makes it from the bytes; None if the file is absent, or if it
    is damaged (`parse` raised ValueError: empty, torn, foreign), which is then set aside."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return parse(data)
    except ValueError as exc:
        set_aside(path, f"{type(exc).__name__}: {exc}" if str(exc) else f"{len(data)} bytes, unreadable")
        return None


def recover_lines(path: str | os.PathLike) -> None:
    """An append-only log (one record a line) whose last line a kill tore: the torn tail goes to
    NAME.damaged and the file is cut back to its last complete line, so the next record starts on a
    line of its own (else it would be glued to the fragment and both lost). Only the writer calls it."""
    path = Path(path)
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            cut = size
            while cut > 0:  # back from the end, a block at a time: a long log is never read whole
                start = max(0, cut - TAIL_BLOCK)
                f.seek(start)
                block = f.read(cut - start)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    cut = start + newline + 1
                    break
                cut = start
            if cut == size:
                return
            f.seek(cut)
            fragment = f.read(min(size - cut, MAX_FRAGMENT))
            f.truncate(cut)
    except FileNotFoundError:
        return
    damaged = path.with_name(path.name + DAMAGED_SUFFIX)
    write_atomic(damaged, fragment)
    fields = {"file": str(path), "why": f"last line torn ({len(fragment)} bytes)", "set_aside_as": damaged.name}
    log.warning("damaged state file set aside", extra={"fields": fields})
