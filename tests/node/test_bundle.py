"""A device's bundle: a model package whose files differ by one byte from what the task commits to
is refused, by file name, before any of it is parsed, and the device does not start."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from coordinator.task.setup import enroll_device, init_task
from edge_sdk.node.bundle import MODEL_DIR, Bundle
from edge_sdk.protocol.identity import Identity
from edge_sdk.training.package import PACKAGE_FILES


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    init_task(root / "task", miners=[Identity.from_seed(b"bundle-miner").public], initial_hashes=20_000)
    device = Identity.from_seed(b"bundle-device")
    device.save(root / "identity")
    bundle = enroll_device(root / "task", device.public, broker_url="mqtt://127.0.0.1:1", out=root / "b", quota=100)
    Bundle(bundle)  # as enrolled, it loads
    return root, bundle


def tampered(enrolled, tmp_path, name: str, where: int):
    """A copy of the bundle with one bit flipped in one package file at byte `where` (negative: from the end)."""
    copy = shutil.copytree(enrolled[1], tmp_path / f"{name}-{where}")
    path = copy / MODEL_DIR / name
    data = bytearray(path.read_bytes())
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("name", PACKAGE_FILES)
def test_a_changed_byte_in_any_package_file_is_refused_naming_the_file(enrolled, tmp_path, name):
    size = (enrolled[1] / MODEL_DIR / name).stat().st_size
    for where in (0, size // 2, -1):
        with pytest.raises(ValueError, match=f"model package file {name} differs from the one the task commits to"):
            Bundle(tampered(enrolled, tmp_path, name, where))


def test_the_device_refuses_to_start_with_a_tampered_package(enrolled, tmp_path):
    root, _ = enrolled
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    bundle = tampered(enrolled, tmp_path, "train_step.onnx", 100)
    result = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "run", "--bundle", str(bundle), "--identity", str(root / "identity"),
         "--data", str(tmp_path / "data.npz"), "--state", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: model package file train_step.onnx differs from the one the task commits to"
    assert not (tmp_path / "state").exists()  # refused before anything was kept
