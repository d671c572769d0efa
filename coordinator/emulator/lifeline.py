"""The emulator's children end when the emulator does, however it ends.

They run in sessions of their own (so Ctrl-C in a terminal reaches only the emulator, which stops
them in order), which also means nothing stops them if the emulator is killed with SIGKILL (a
test's timeout, the OOM killer, `kill -9`). So each Python child the emulator spawns gets the
emulator's pid in `BLOCKFL_EMULATOR_PID` and SIGTERMs itself (its graceful stop) once its parent
is no longer that process; the broker, which cannot watch, gets the kernel's parent-death signal
on Linux. A miner or device started any other way never looks at either.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

ENV = "BLOCKFL_EMULATOR_PID"
CHECK_S = 1.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def child_env() -> dict[str, str]:
    """Environment entries for a process the emulator spawns."""
    return {ENV: str(os.getpid())}


def follow_parent() -> None:
    """In a process the emulator spawned: SIGTERM this process once the emulator is gone (checked
    every CHECK_S seconds, in a daemon thread). Does nothing in any other process."""
    value = os.environ.get(ENV, "")
    if not value.isdigit():
        return
    parent = int(value)

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(CHECK_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def die_with_parent() -> None:
    """A `preexec_fn` for a non-Python child (the broker): on Linux the kernel SIGTERMs it when the
    thread that started it exits; elsewhere nothing (the emulator's own stop still ends it)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
