"""State files (issue 17): written atomically, read defensively. A damaged file is reported, set
aside as NAME.damaged and recovered from; never an exception at start. Real files, real keys."""

import hashlib
import json
import logging
import os
import stat

import pytest

from coordinator.cli import main as blockfl
from edge_sdk.chain.store import ChainStore
from edge_sdk.files import read_state, recover_lines, write_atomic
from edge_sdk.node.device import open_chain
from edge_sdk.node.outbox import Outbox
from edge_sdk.node.status import ModelHashLog, Status, Timeline
from edge_sdk.transport.mqtt import BrokerConfig


def reports(caplog):
    return [r.fields for r in caplog.records if r.getMessage() == "damaged state file set aside"]


def test_an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "outbox.bin"
    write_atomic(path, b"old")
    write_atomic(path, b"new" * 1000, 0o600)
    assert path.read_bytes() == b"new" * 1000 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox.bin"]


@pytest.mark.parametrize("content", [b"", b'{"node": "d", "role": "dev', b"\xff\xfe", b"[1, 2]"])
def test_a_damaged_status_is_set_aside_and_reported_once(tmp_path, caplog, content):
    path = tmp_path / "status.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert read_state(path, Status.parse) is None
        assert read_state(path, Status.parse) is None  # now absent: nothing more to say
    assert not path.exists() and (tmp_path / "status.json.damaged").read_bytes() == content
    [report] = reports(caplog)
    assert report["file"] == str(path) and report["set_aside_as"] == "status.json.damaged"


def test_a_torn_last_line_is_cut_off_so_the_next_record_is_whole(tmp_path, caplog):
    log = ModelHashLog(tmp_path)
    log.append(1, b"\x01" * 32, b"\x02" * 32)
    with open(log.path, "a") as f:
        f.write('{"height": 2, "blo')
    with caplog.at_level(logging.WARNING):
        log.recover()
        recover_lines(log.path)  # whole again: nothing to do
    log.append(3, b"\x03" * 32, b"\x04" * 32)
    lines = log.path.read_text().splitlines()
    assert [json.loads(line)["height"] for line in lines] == [1, 3]
    assert (tmp_path / "model_hashes.jsonl.damaged").read_text() == '{"height": 2, "blo'
    assert len(reports(caplog)) == 1


def outbox(fed, tmp_path, tip):
    return Outbox(tmp_path, fed.task, fed.devices[0].public.sign_pk, tip, Timeline(tmp_path / "timeline.jsonl"))


def test_a_held_update_survives_a_restart_and_a_damaged_one_is_set_aside(fed, tmp_path, caplog):
    genesis = hashlib.sha256(fed.genesis).digest()  # any 32 bytes will do as a base here
    box = outbox(fed, tmp_path, genesis)
    assert box.update is None and box.signed_for is None  # a new device
    update = fed.update(0, genesis)
    box.hold(update, genesis)
    again = outbox(fed, tmp_path, genesis)
    assert (again.update, again.base, again.signed_for) == (update, genesis, genesis)
    for damaged in (b"", update[: len(update) // 2], fed.update(1, genesis)):  # empty, torn, another device's
        (tmp_path / "outbox.bin").write_bytes(damaged)
        with caplog.at_level(logging.WARNING):
            box = outbox(fed, tmp_path, genesis)
        assert box.update is None and box.signed_for == genesis
        assert (tmp_path / "outbox.bin.damaged").read_bytes() == damaged
    assert [r["file"].rsplit("/", 1)[1] for r in reports(caplog)] == ["outbox.bin"] * 3


@pytest.mark.parametrize("timeline", [True, False])
def test_a_lost_signed_for_record_makes_the_device_sit_out_a_round_it_may_have_signed(fed, tmp_path, caplog, timeline):
    """Two updates on one base are evidence against the device: without its record it counts every
    base its timeline saw it train on, and its tip's, as signed, and writes that down."""
    trained, tip = b"\x07" * 32, b"\x09" * 32
    if timeline:
        Timeline(tmp_path / "timeline.jsonl").mark("trained", base=trained, digest=b"\x01" * 32)
        with open(tmp_path / "timeline.jsonl", "a") as f:
            f.write('{"event": "trai')  # its own tail torn too
    (tmp_path / "signed_for.bin").write_bytes(b"\x07" * 16)
    with caplog.at_level(logging.WARNING):
        box = outbox(fed, tmp_path, tip)
    expected = [trained, tip] if timeline else [tip]
    assert box.signed == expected and (tmp_path / "signed_for.bin").read_bytes() == b"".join(expected)
    assert box.has_signed(tip) and box.has_signed(trained) == timeline
    assert (tmp_path / "signed_for.bin.damaged").read_bytes() == b"\x07" * 16
    assert any(r.getMessage().startswith("signed-for record lost") for r in caplog.records)


def test_a_device_chain_sqlite_cannot_read_is_set_aside_and_started_again(fed, tmp_path, caplog):
    path = tmp_path / "chain.db"
    ChainStore(path, fed.genesis).close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        store = open_chain(path, fed.genesis)
    try:
        assert store.count() == 1 and store.tip.hash == store.genesis_hash  # genesis, ready to sync
    finally:
        store.close()
    assert (tmp_path / "chain.db.damaged").read_bytes() == data[: len(data) // 2]
    assert [r["file"] for r in reports(caplog)] == [str(path)]


def test_a_miner_whose_database_is_damaged_exits_with_one_line_and_status_2(fed, tmp_path, capsys):
    fed.miner.save(tmp_path / "identity")
    (tmp_path / "genesis.block").write_bytes(fed.genesis)
    BrokerConfig("mqtt://127.0.0.1:1", "m", "p").save(tmp_path / "broker.json")
    (tmp_path / "chain.db").write_bytes(os.urandom(8192))
    args = ["--identity", str(tmp_path / "identity"), "--genesis", str(tmp_path / "genesis.block")]
    args += ["--broker-config", str(tmp_path / "broker.json"), "--db", str(tmp_path / "chain.db")]
    assert blockfl(["miner", "run", *args]) == 2
    assert capsys.readouterr().err.strip() == "error: file is not a database"
