"""Structured, quiet-by-default logs: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback

MAX_DETAIL = 200  # characters of an exception's text: it may hold a peer's values
MAX_FRAMES = 8  # innermost frames of a failure's traceback, as "file:line function"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            entry.update(_failure(record.exc_info[1]))
        return json.dumps(entry, default=str)


def _failure(exc: BaseException) -> dict:
    """What failed and where, on one line: the type, its text cut to MAX_DETAIL characters, and
    the innermost frames (no local values)."""
    frames = traceback.extract_tb(exc.__traceback__)[-MAX_FRAMES:]
    return {
        "error": type(exc).__name__,
        "detail": str(exc)[:MAX_DETAIL],
        "at": [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames],
    }


def _short(path: str) -> str:
    """A path relative to the working directory when under it (shorter lines, no home paths)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def setup(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def event(logger: logging.Logger, level: int, msg: str, **fields) -> None:
    logger.log(level, msg, extra={"fields": fields})
