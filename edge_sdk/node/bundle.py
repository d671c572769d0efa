"""The enrolment bundle: what the coordinator gives a node, and the only module that knows its files.

A device's bundle holds genesis.block, cert.bin, model/ (the model package) and broker.json (0600);
a miner's holds genesis.block, broker.json and, in Paillier modes, paillier.share.sealed (its key
share, sealed to it). Devices hold no decryption key in any mode.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from edge_sdk.chain.rules import validate_genesis
from edge_sdk.files import write_atomic, write_private
from edge_sdk.protocol.cert import Certificate
from edge_sdk.protocol.fixedpoint import model_hash, to_fixed
from edge_sdk.training.package import ModelPackage
from edge_sdk.transport.mqtt import BrokerConfig

GENESIS_FILE = "genesis.block"
CERT_FILE = "cert.bin"
MODEL_DIR = "model"
BROKER_FILE = "broker.json"
SEALED_SHARE_FILE = "paillier.share.sealed"


def write_bundle(
    out: str | Path,
    *,
    genesis: bytes,
    broker: BrokerConfig,
    cert: bytes | None = None,
    model_dir: str | Path | None = None,
    sealed_share: bytes | None = None,
) -> Path:
    """Write a bundle; a miner's has genesis, broker settings and (Paillier) its sealed key share."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / GENESIS_FILE, genesis)
    broker.save(out / BROKER_FILE)
    if cert is not None:
        write_atomic(out / CERT_FILE, cert)
    if model_dir is not None:
        shutil.copytree(model_dir, out / MODEL_DIR, dirs_exist_ok=True)
    if sealed_share is not None:
        write_private(out / SEALED_SHARE_FILE, sealed_share)
    return out


class Bundle:
    """A device's bundle, checked: genesis, a certificate of this task, the committed model package."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.genesis = (self.directory / GENESIS_FILE).read_bytes()
        _, self.task = validate_genesis(self.genesis)
        self.cert_raw = (self.directory / CERT_FILE).read_bytes()
        self.cert = Certificate.parse(self.cert_raw, self.task)
        self._check_files(self.directory / MODEL_DIR)
        self.package = ModelPackage.load(self.directory / MODEL_DIR)
        self.broker = BrokerConfig.load(self.directory / BROKER_FILE)
        self._check_initial_model()

    def _check_files(self, model_dir: Path) -> None:
        """Each package file against the SHA-256 the task commits to, before any is parsed: a changed
        byte anywhere (the manifest's first one too) is refused by name, not as a parse error."""
        for name, digest in self.task.model_files.items():
            if hashlib.sha256((model_dir / name).read_bytes()).digest() != digest:
                raise ValueError(f"model package file {name} differs from the one the task commits to")

    def _check_initial_model(self) -> None:
        frac = self.task.chain.frac_bits
        initial = to_fixed(self.package.initial_params(), frac)
        if model_hash(initial, frac) != model_hash(self.task.initial_model, frac):
            raise ValueError("the model package's initial parameters are not the genesis model")
