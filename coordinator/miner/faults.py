"""Fault injection for tests and benchmarks/chaos.py, off unless its environment variable is set.

BLOCKFL_FAULT_HOLD_UPDATE_MS=N: the miner sleeps N ms before handling each update from a device,
so the broker has delivered it (and acknowledged it to the device) while the miner has neither
pooled nor refused it: a SIGKILL in that window is the one issue 17 describes. Never set it in
production; the miner warns at every held update.
"""

from __future__ import annotations

import logging
import os
import time

from edge_sdk.node.logs import event

HOLD_UPDATE_ENV = "BLOCKFL_FAULT_HOLD_UPDATE_MS"
MAX_HOLD_MS = 600_000
log = logging.getLogger("blockfl.miner")


def hold_update_seconds() -> float:
    """The hold the environment asks for (0: none; a value that is not a whole number counts as none),
    announced once at start: a variable left set turns a miner into one that never pools in time."""
    try:
        seconds = min(MAX_HOLD_MS, max(0, int(os.environ.get(HOLD_UPDATE_ENV, "0")))) / 1000
    except ValueError:
        return 0.0
    if seconds:
        event(log, logging.WARNING, "fault injection enabled: every device update is held", env=HOLD_UPDATE_ENV)
    return seconds


def hold_update(seconds: float, source: str) -> None:
    if seconds:
        event(log, logging.WARNING, "fault injection: holding an update", source=source, ms=int(seconds * 1000))
        time.sleep(seconds)
