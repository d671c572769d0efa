"""Enrolment vectors (PROTOCOL.md §2, §2.1): the identity files of a miner and a device, and the
bundles the coordinator hands them, written by the project's own writers into a temporary
directory and read back byte for byte. Used by generate.py on the Paillier vectors' task.

The sealed key share uses a random ephemeral key, as every sealed box does: the miner's
`box.key` opens it, and its plaintext is given to compare.
"""

from __future__ import annotations

import pathlib
import tempfile

from paillier_vectors import federation

from edge_sdk.node.bundle import BROKER_FILE, write_bundle
from edge_sdk.privacy.sealed_share import seal_share, share_plaintext
from edge_sdk.protocol.identity import BOX_KEY_FILE, PUBLIC_FILE, SIGN_KEY_FILE
from edge_sdk.transport.mqtt import BrokerConfig

TEXT_FILES = (BROKER_FILE, SIGN_KEY_FILE, BOX_KEY_FILE, PUBLIC_FILE)


def _files(directory: pathlib.Path) -> dict:
    """Every file of a directory: text files as text, the others as hex."""
    return {
        path.name: path.read_text() if path.name in TEXT_FILES else path.read_bytes().hex()
        for path in sorted(directory.iterdir())
    }


def _node(identity, root: pathlib.Path, name: str, **bundle) -> dict:
    identity.save(root / name / "identity")
    broker = BrokerConfig("mqtts://broker.example:8883", identity.public.node_id, f"{name}-vector-password")
    write_bundle(root / name / "bundle", broker=broker, **bundle)
    return {"identity": _files(root / name / "identity"), "bundle": _files(root / name / "bundle")}


def enrolment_vectors(t0: int) -> dict:
    fed = federation(t0)
    miner, share = fed.miners[0], fed.shares[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        sealed = seal_share(share, miner.public.box_pk)
        miner_vector = _node(miner, root, "miner", genesis=fed.genesis, sealed_share=sealed)
        device_vector = _node(fed.devices[0], root, "device", genesis=fed.genesis, cert=fed.certs[0])
    return {
        "note": "Files as written by Identity.save and write_bundle, for the `paillier` vectors' task (its "
        "genesis is the bundles' genesis.block). Text files as text, binary files as hex. The device bundle's "
        "model/ directory (the model package, docs/training.md) is left out: this task commits to no model "
        "files. paillier.share.sealed is a sealed box with a random ephemeral key: open it with the miner's "
        "box.key and compare with share_plaintext.",
        "miner": {**miner_vector, "share_plaintext": share_plaintext(share).hex(), "share_index": share.index},
        "device": device_vector,
    }
