import json
import os
import stat
import subprocess
import sys

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from edge_sdk.protocol import envelope
from edge_sdk.protocol.errors import ProtocolError, Reason
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
    other = Identity.from_seed(b"y")
    assert identity.public == Identity.from_seed(b"x").public
    assert identity.public != other.public
    # signs: the signature verifies under its own public key only, and only for the signed message
    message = b"a message to sign"
    signature = identity.sign(message)
    assert len(signature) == 64
    assert VerifyKey(identity.public.sign_pk).verify(message, signature) == message
    with pytest.raises(BadSignatureError):
        VerifyKey(other.public.sign_pk).verify(message, signature)
    with pytest.raises(BadSignatureError):
        VerifyKey(identity.public.sign_pk).verify(b"another message", signature)
    # signed envelopes: open under the signer's key; a changed signer byte fails with bad_signature
    wire = envelope.sign(identity, "cert", {"k": 1})
    assert envelope.open_envelope(wire).signer == identity.public.sign_pk
    forged = bytearray(wire)
    at = bytes(wire).index(identity.public.sign_pk)
    forged[at] ^= 1
    with pytest.raises(ProtocolError) as info:
        envelope.open_envelope(bytes(forged))
    assert info.value.reason is Reason.BAD_SIGNATURE
    # boxes: sealed to the public box key, opened by its private key only
    sealed = envelope.seal(identity.public.box_pk, message)
    assert message not in sealed
    assert envelope.unseal(identity.box_key, sealed) == message
    with pytest.raises(ProtocolError) as info:
        envelope.unseal(other.box_key, sealed)
    assert info.value.reason is Reason.BAD_SEAL
    with pytest.raises(FileNotFoundError):
        Identity.load("/nonexistent/identity")
