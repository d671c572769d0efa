"""A real device on an emulated Raspberry Pi 4 (aarch64, Cortex-A72, qemu-user) against a native
Mosquitto and a native miner: it trains the conv net cnn:8x8 with the portable backend on the
stock aarch64 onnxruntime wheel, signs, seals and publishes an update; the miner accepts it and
mines a block; the emulated device verifies that block and computes the same model hash as the
native side.

The emulated root and its installed wheels are cached in .cache/arm64 (cold: about 2 minutes)."""

import json
import shutil
import subprocess
import sys
import time

import pytest
from conftest import REPO
from testbed import Testbed

pytestmark = pytest.mark.timeout(900)
CACHE = REPO / ".cache" / "arm64"


@pytest.fixture(scope="module")
def arm64_python(tmp_path_factory):
    qemu = shutil.which("qemu-aarch64-static")
    assert qemu, "qemu-aarch64-static is missing: deploy/dev/setup-test-envs.sh installs qemu-user-static"
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("blockfl_edge-*.whl"))
    started = time.monotonic()
    built = subprocess.run(
        ["bash", str(REPO / "tests/arm64/build-root.sh"), str(CACHE), str(wheel)],
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(built.stdout, f"(arm64 environment ready in {time.monotonic() - started:.0f} s)")
    return [qemu, "-cpu", "cortex-a72", "-L", str(CACHE / "root"), str(CACHE / "venv" / "bin" / "python")]


def test_the_install_script_gives_a_working_device_cli_on_arm64(arm64_python):
    probe = subprocess.run(
        [
            *arm64_python,
            "-c",
            "import platform, onnxruntime, numpy, nacl; print(platform.machine(), onnxruntime.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[0] == "aarch64"
    help_out = subprocess.run(
        [*arm64_python, str(CACHE / "venv" / "bin" / "blockfl-device"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_out.returncode == 0 and "keys" in help_out.stdout and "run" in help_out.stdout
    absent = subprocess.run(
        [
            *arm64_python,
            "-c",
            "import importlib.util as u; print([m for m in ('onnx', 'torch', 'sklearn') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert absent.stdout.strip() == "[]"


def test_an_emulated_pi_trains_publishes_and_verifies_against_native_nodes(arm64_python, tmp_path):
    bed = Testbed(tmp_path / "bed", miners=1, devices=1, min_updates=1, max_wait_ms=60_000, model="cnn:8x8")
    try:
        bed.start_miner(0)
        bed.start_device(0, python=arm64_python)
        bed.wait(
            lambda: bed.metrics(0).get("counters", {}).get("updates_accepted", 0) >= 1,
            300,
            "the native miner to accept the Pi's update",
        )
        bed.wait(lambda: bed.metrics(0).get("tip_height", 0) >= 1, 120, "a block with the Pi's update")
        bed.wait(lambda: bed.device_status(0).get("tip_height", 0) >= 1, 300, "the Pi to verify the block")
    finally:
        bed.close()
    log = (tmp_path / "bed" / "d0.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    from edge_sdk.chain.store import ChainStore

    store = ChainStore(tmp_path / "bed" / "m0" / "chain.db")
    block1 = store.ancestor(store.tip.hash, 1)
    store.close()
    computed = {
        json.loads(line)["block"]: json.loads(line)["model_hash"]
        for line in (tmp_path / "bed" / "d0" / "state" / "model_hashes.jsonl").read_text().splitlines()
    }
    assert computed[block1.hash.hex()] == block1.model_hash.hex()  # the Pi computed the native model hash, bit for bit
