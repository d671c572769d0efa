"""Node identities: an Ed25519 signing key and an X25519 box key, for devices, miners and the coordinator.

Private keys live in files of mode 0600 and are never printed or logged; `repr` shows only the
public half.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from edge_sdk.files import write_atomic, write_private

SIGN_KEY_FILE = "sign.key"
BOX_KEY_FILE = "box.key"
PUBLIC_FILE = "identity.json"


def node_id(sign_pk: bytes) -> str:
    """Short stable name of a node: hex of the first 16 bytes of SHA-256(sign_pk)."""
    return hashlib.sha256(sign_pk).hexdigest()[:32]


@dataclass(frozen=True)
class PublicIdentity:
    sign_pk: bytes
    box_pk: bytes

    @property
    def node_id(self) -> str:
        return node_id(self.sign_pk)

    def to_json(self) -> dict:
        return {"device_id": self.node_id, "sign_pk": self.sign_pk.hex(), "box_pk": self.box_pk.hex()}

    @classmethod
    def from_json(cls, data: dict) -> PublicIdentity:
        return cls(bytes.fromhex(data["sign_pk"]), bytes.fromhex(data["box_pk"]))


class Identity:
    """A private identity. Holds the keys in memory; `save` writes them mode 0600."""

    def __init__(self, sign_key: SigningKey, box_key: PrivateKey):
        self.sign_key = sign_key
        self.box_key = box_key
        self.public = PublicIdentity(bytes(sign_key.verify_key), bytes(box_key.public_key))

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate(), PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity for tests and vectors; never use a guessable seed in production."""
        sign_seed = hashlib.sha256(b"blockfl-sign" + seed).digest()
        box_seed = hashlib.sha256(b"blockfl-box" + seed).digest()
        return cls(SigningKey(sign_seed), PrivateKey(box_seed))

    def sign(self, message: bytes) -> bytes:
        return self.sign_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity(node_id={self.public.node_id})"

    def save(self, directory: str | os.PathLike, *, force: bool = False) -> None:
        """Write the identity; refuses to replace an existing one unless force is set."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths = [directory / SIGN_KEY_FILE, directory / BOX_KEY_FILE, directory / PUBLIC_FILE]
        existing = [p.name for p in paths if p.exists()]
        if existing and not force:
            raise FileExistsError(
                f"an identity already exists in {directory} ({', '.join(existing)}); use --force to replace it"
            )
        write_private(paths[0], bytes(self.sign_key).hex() + "\n")
        write_private(paths[1], bytes(self.box_key).hex() + "\n")
        write_atomic(paths[2], json.dumps(self.public.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Identity:
        directory = Path(directory)
        sign_key = SigningKey(_read_key(directory / SIGN_KEY_FILE))
        box_key = PrivateKey(_read_key(directory / BOX_KEY_FILE))
        return cls(sign_key, box_key)


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); run chmod 600 {path}")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path} is not a hex key") from None
    if len(key) != 32:
        raise ValueError(f"{path} must hold 32 bytes, found {len(key)}")
    return key
