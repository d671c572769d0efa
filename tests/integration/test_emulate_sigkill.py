"""`blockfl emulate` killed with SIGKILL (a test's timeout, the OOM killer, `kill -9`) cannot stop
its federation, so the federation stops itself: every miner, device worker and the broker it
started go within seconds, instead of running (and holding CPU and ports) until the machine
reboots."""

import os
import signal
import subprocess
import sys
import time


def leftovers(out) -> list[str]:
    """Processes whose command line names the emulation's directory (its miners, workers, broker)."""
    return subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()


def test_a_sigkilled_emulator_leaves_no_process_behind(tmp_path):
    out = tmp_path / "killed"
    args = ["emulate", "--initial-hashes", "20000", "--devices", "3", "--miners", "2", "--rounds", "50"]
    run = subprocess.Popen([sys.executable, "-m", "coordinator.cli", *args, "--out", str(out)],
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "round 1/" not in run.stdout.readline():
            pass
        children = leftovers(out)
        assert len(children) >= 2 + 1 + 1, f"miners, a worker and the broker should be running: {children}"
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 20  # noticed within a second; the workers close their agents' stores
        while still := leftovers(out):
            assert time.monotonic() < deadline, f"left running after the emulator was killed: {still}"
            time.sleep(0.2)
    finally:
        run.kill()
        for pid in leftovers(out):
            os.kill(int(pid), signal.SIGKILL)
