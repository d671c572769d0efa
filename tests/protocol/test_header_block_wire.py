"""Headers and blocks on the wire: the exact 220 header bytes field by field, what a block body must
hold, and what the builders (template, seal, genesis) put in each field."""

import hashlib
import struct

import pytest

from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import (
    HEADER_SIZE,
    ZERO_HASH,
    Block,
    Header,
    block_template,
    body_root,
    make_genesis,
    seal_block,
)
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.merkle import merkle_root

HEADER = Header(
    height=0x0102030405060708,
    prev_hash=b"\x11" * 32,
    task_id=b"\x22" * 32,
    merkle_root=b"\x33" * 32,
    model_hash=b"\x44" * 32,
    miner=b"\x55" * 32,
    timestamp_ms=0x1122334455667788,
    target=(1 << 255) + 0xABCDEF,
    nonce=0x0F0E0D0C0B0A0908,
)


def reason_of(call) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call()
    return info.value


def test_a_header_encodes_each_field_big_endian_in_protocol_order():
    expected = (
        (1).to_bytes(4, "big")
        + HEADER.height.to_bytes(8, "big")
        + b"\x11" * 32
        + b"\x22" * 32
        + b"\x33" * 32
        + b"\x44" * 32
        + b"\x55" * 32
        + HEADER.timestamp_ms.to_bytes(8, "big")
        + HEADER.target.to_bytes(32, "big")
        + HEADER.nonce.to_bytes(8, "big")
    )
    assert HEADER.encode() == expected and len(expected) == HEADER_SIZE == 220
    assert HEADER.hash == hashlib.sha256(expected).digest()


def test_a_header_decodes_to_every_field_it_encodes():
    decoded = Header.decode(HEADER.encode())
    assert decoded == HEADER and decoded.version == 1
    assert (decoded.height, decoded.timestamp_ms, decoded.target, decoded.nonce) == (
        HEADER.height, HEADER.timestamp_ms, HEADER.target, HEADER.nonce)  # fmt: skip


def test_with_nonce_changes_the_nonce_only():
    mined = HEADER.with_nonce(99)
    assert mined.nonce == 99 and HEADER.nonce == 0x0F0E0D0C0B0A0908
    assert mined.encode()[:-8] == HEADER.encode()[:-8] and mined.encode()[-8:] == (99).to_bytes(8, "big")


@pytest.mark.parametrize(
    "data", [bytes(219), bytes(221), bytearray(220), 220, "h" * 220], ids=["219", "221", "bytearray", "int", "text"]
)
def test_a_header_must_be_220_bytes(data):
    err = reason_of(lambda: Header.decode(data))
    assert (err.reason, err.detail) == (Reason.BAD_BODY, "header must be 220 bytes")


@pytest.mark.parametrize("version", [0, 2])
def test_a_header_of_another_version_is_bad_version(version):
    data = struct.pack(">I", version) + HEADER.encode()[4:]
    err = reason_of(lambda: Header.decode(data))
    assert (err.reason, err.detail) == (Reason.BAD_VERSION, f"header version {version}")


def test_body_root_commits_to_each_update_in_order_then_the_extras(fed):
    updates = [b"first", b"second", b"third"]
    extras = Extras(excluded=(1,))
    leaves = [hashlib.sha256(u).digest() for u in updates] + [extras.leaf]
    assert body_root(updates, extras) == merkle_root(leaves)
    assert body_root(updates[::-1], extras) != body_root(updates, extras) != body_root(updates, Extras())


def test_a_template_extends_its_parent_with_the_given_fields(fed):
    parent = fed.chain().tip.header
    extras = Extras(excluded=(0,))
    header = block_template(
        parent=parent, task=fed.task, miner=b"\x07" * 32, update_bytes=[b"u"], extras=extras,
        commitment=b"\x09" * 32, timestamp_ms=1234, target=5678,
    )  # fmt: skip
    assert header == Header(
        parent.height + 1, parent.hash, fed.task.id, body_root([b"u"], extras), b"\x09" * 32, b"\x07" * 32, 1234, 5678
    )
    assert (header.height, header.nonce, header.version) == (1, 0, 1)


def test_a_sealed_block_parses_back_to_its_header_updates_and_extras(fed):
    updates = [fed.update(0, ZERO_HASH), fed.update(1, ZERO_HASH)]
    extras = Extras(excluded=(1,))
    raw = seal_block(fed.miner, HEADER, updates, extras)
    block = Block.parse(raw, len(raw))
    assert (block.header, block.update_bytes, block.extras) == (HEADER, tuple(updates), extras)
    assert block.hash == HEADER.hash and block.raw == raw and block.envelope.signer == fed.miner.public.sign_pk
    assert block.envelope.type == "block"
    assert reason_of(lambda: Block.parse(raw, len(raw) - 1)).reason is Reason.TOO_LARGE


def block_body(**changes) -> dict:
    body = {"header": HEADER.encode(), "updates": [b"u0", b"u1"], "extras": Extras().to_wire()}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    "body",
    [block_body(header=None), block_body(extras=None), block_body(nonce=1), [HEADER.encode(), [], {}]],
    ids=["no-header", "no-extras", "extra-field", "list"],
)
def test_a_block_body_must_have_exactly_header_updates_extras(fed, body):
    err = reason_of(lambda: Block.parse(envelope.sign(fed.miner, "block", body), 1 << 20))
    assert (err.reason, err.detail) == (Reason.BAD_BODY, "block body must have exactly header, updates, extras")


@pytest.mark.parametrize("updates", [b"u0", [b"u0", "u1"], {"u": b"u0"}], ids=["bytes", "text-item", "map"])
def test_a_blocks_updates_must_be_a_list_of_byte_strings(fed, updates):
    raw = envelope.sign(fed.miner, "block", block_body(updates=updates))
    err = reason_of(lambda: Block.parse(raw, 1 << 20))
    assert (err.reason, err.detail) == (Reason.BAD_BODY, "updates must be a list of byte strings")


def test_a_blocks_extras_are_checked_against_its_update_count(fed):
    last = envelope.sign(fed.miner, "block", block_body(extras=Extras(excluded=(1,)).to_wire()))
    assert Block.parse(last, 1 << 20).extras.excluded == (1,)
    past = envelope.sign(fed.miner, "block", block_body(extras=Extras(excluded=(2,)).to_wire()))
    assert reason_of(lambda: Block.parse(past, 1 << 20)).reason is Reason.BAD_EXTRAS


def test_a_block_body_under_another_message_type_is_wrong_type(fed):
    raw = envelope.sign(fed.miner, "genesis", block_body())
    assert reason_of(lambda: Block.parse(raw, 1 << 20)).reason is Reason.WRONG_TYPE


def test_genesis_carries_the_task_and_its_initial_state(fed):
    env = envelope.open_envelope(make_genesis(fed.coordinator, fed.task), expect="genesis")
    assert set(env.body) == {"header", "task"} and env.body["task"] == fed.task.to_wire()
    assert env.signer == fed.coordinator.public.sign_pk
    header = Header.decode(env.body["header"])
    assert header == Header(
        0,
        ZERO_HASH,
        fed.task.id,
        merkle_root([]),
        model_hash(fed.task.initial_model, fed.task.chain.frac_bits),
        fed.task.coordinator,
        fed.task.created_ms,
        fed.task.chain.initial_target,
    )
