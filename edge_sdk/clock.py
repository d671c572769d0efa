"""The one clock every module reads: milliseconds since the Unix epoch, as timestamps travel."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
