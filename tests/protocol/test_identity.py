import json
import os
import stat
import subprocess
import sys

import pytest

from edge_sdk.protocol.identity import Identity, node_id


def run_device(*args):
    return subprocess.run([sys.executable, "-m", "edge_sdk.cli", *args], capture_output=True, text=True)


def test_keys_init_writes_private_files_0600_and_prints_public_identity(tmp_path):
    result = run_device("keys", "init", "--dir", str(tmp_path / "id"))
    assert result.returncode == 0, result.stderr
    public = json.loads(result.stdout)
    assert set(public) >= {"device_id", "sign_pk", "box_pk"}
    assert len(bytes.fromhex(public["sign_pk"])) == 32 and len(bytes.fromhex(public["box_pk"])) == 32
    assert public["device_id"] == node_id(bytes.fromhex(public["sign_pk"]))
    for name in ("sign.key", "box.key"):
        assert stat.S_IMODE(os.stat(tmp_path / "id" / name).st_mode) == 0o600
    loaded = Identity.load(tmp_path / "id")
    assert loaded.public.to_json() == public
    for name in ("sign.key", "box.key"):  # the private halves never reach stdout or stderr
        secret = (tmp_path / "id" / name).read_text().strip()
        assert secret not in result.stdout + result.stderr
    assert secret not in repr(loaded)


def test_keys_init_refuses_to_overwrite_without_force(tmp_path):
    first = json.loads(run_device("keys", "init", "--dir", str(tmp_path)).stdout)
    before = (tmp_path / "sign.key").read_bytes()
    again = run_device("keys", "init", "--dir", str(tmp_path))
    assert again.returncode == 1 and "--force" in again.stderr
    assert (tmp_path / "sign.key").read_bytes() == before
    forced = run_device("keys", "init", "--dir", str(tmp_path), "--force")
    assert forced.returncode == 0 and json.loads(forced.stdout)["sign_pk"] != first["sign_pk"]
    assert stat.S_IMODE(os.stat(tmp_path / "sign.key").st_mode) == 0o600


def test_keys_show_and_refusal_of_readable_keys(tmp_path):
    created = json.loads(run_device("keys", "init", "--dir", str(tmp_path)).stdout)
    assert json.loads(run_device("keys", "show", "--dir", str(tmp_path)).stdout) == created
    os.chmod(tmp_path / "sign.key", 0o644)
    shown = run_device("keys", "show", "--dir", str(tmp_path))
    assert shown.returncode == 1 and "chmod 600" in shown.stderr


def test_help_is_available():
    for args in (["--help"], ["keys", "init", "--help"]):
        result = run_device(*args)
        assert result.returncode == 0 and "usage" in result.stdout


def test_identity_signs_and_boxes():
    identity = Identity.from_seed(b"x")
    assert identity.public == Identity.from_seed(b"x").public
    assert identity.public != Identity.from_seed(b"y").public
    with pytest.raises(FileNotFoundError):
        Identity.load("/nonexistent/identity")
