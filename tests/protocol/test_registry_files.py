"""The coordinator's registry in process: the credentials it issues, the passwd and acl files it
renders for Mosquitto (PROTOCOL.md §13.5), revocation, and what it keeps on disk. The same files
are tried against a real broker in tests/integration/test_acl.py; here every line is read back."""

import base64
import hashlib
import json
import stat

import pytest

from coordinator.task.registry import Registry, password_hash
from edge_sdk.protocol.identity import Identity

TASK = bytes(range(32))
PREFIX = "blockfl/" + TASK.hex()[:16]


def key(name: str) -> bytes:
    return Identity.from_seed(name.encode()).public.sign_pk


def node_name(name: str) -> str:
    return Identity.from_seed(name.encode()).public.node_id


def verifies(password: str, stored: str) -> bool:
    """Mosquitto's check of a `$7$` line: PBKDF2-SHA512 over the salt with the stored iteration count."""
    _, seven, iterations, salt, digest = stored.split("$")
    expected = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return seven == "7" and base64.b64decode(digest) == expected


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def registry(tmp_path):
    (tmp_path / "task").mkdir()
    return Registry(tmp_path / "task", TASK)


def test_password_hashes_are_mosquitto_passwd_lines_of_101_pbkdf2_sha512_iterations():
    salt = b"0123456789ab"
    digest = hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)
    expected = f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert password_hash("secret", salt) == expected


def test_each_password_hash_gets_a_fresh_12_byte_salt():
    first, second = password_hash("secret"), password_hash("secret")
    assert first != second and verifies("secret", first) and verifies("secret", second)
    assert len(base64.b64decode(first.split("$")[3])) == 12
    assert not verifies("Secret", first)


def test_a_device_is_registered_under_its_node_id_with_a_password_only_it_gets(registry):
    name, password = registry.add("device", key("d0"), quota=500)
    assert name == node_name("d0")
    entry = registry.data["nodes"][name]
    assert entry["role"] == "device" and entry["sign_pk"] == key("d0").hex() and entry["quota"] == 500
    assert entry["revoked"] is False and verifies(password, entry["hash"]) and password not in entry["hash"]
    assert len(password) == 32  # 24 random bytes, url-safe base64
    assert registry.add("device", key("d1"))[1] != password


def test_observers_get_a_random_name_of_their_own(registry):
    name, _ = registry.add("observer", key("o"))
    assert name.startswith("observer-") and len(name) == len("observer-") + 8
    int(name.removeprefix("observer-"), 16)
    assert registry.add("observer", key("o"))[0] != name


@pytest.mark.parametrize(
    "role, username",
    [("auditor", None), ("bridge", None), ("device", "someone"), ("miner", "someone")],
)
def test_unknown_roles_and_misplaced_usernames_are_refused(registry, role, username):
    with pytest.raises(ValueError, match="auditor" if role == "auditor" else "bridge"):  # the operator sees why
        registry.add(role, key("x"), username=username)
    assert registry.data["nodes"] == {}


def test_registering_a_bridge_again_replaces_its_password(registry):
    name, first = registry.add("bridge", key("b"), username="regional-1")
    again, second = registry.add("bridge", key("b"), username="regional-1")
    assert name == again == "regional-1" and list(registry.data["nodes"]) == ["regional-1"]
    stored = registry.data["nodes"]["regional-1"]["hash"]
    assert verifies(second, stored) and not verifies(first, stored)


def test_a_revoked_device_loses_its_broker_lines_and_is_listed_among_revoked_keys(registry):
    d0, _ = registry.add("device", key("d0"))
    d1, _ = registry.add("device", key("d1"))
    registry.add("miner", key("m0"))
    assert registry.revoked_keys() == []
    node = registry.revoke(d0)
    assert node["revoked"] is True and registry.data["nodes"][d0]["revoked"] is True
    assert registry.revoked_keys() == [key("d0")]
    assert f"{d0}:" not in registry.passwd() and f"{d1}:" in registry.passwd()
    assert f"user {d0}" not in registry.acl() and f"user {d1}" in registry.acl()


@pytest.mark.parametrize("who", ["nobody", "m0"])
def test_only_an_enrolled_device_can_be_revoked(registry, who):
    registry.add("miner", key("m0"))
    name = node_name(who) if who == "m0" else "nobody"
    with pytest.raises(KeyError, match=name):
        registry.revoke(name)
    assert registry.revoked_keys() == []


def test_passwd_lists_the_nodes_of_the_given_roles_sorted_by_name(registry):
    names = {registry.add(role, key(role))[0]: role for role in ("miner", "device", "coordinator")}
    lines = registry.passwd().splitlines()
    assert [line.split(":")[0] for line in lines] == sorted(names)
    for line in lines:
        name, stored = line.split(":", 1)
        assert stored == registry.data["nodes"][name]["hash"]
    assert registry.passwd().endswith("\n")
    device = node_name("device")
    assert registry.passwd(("device",)) == f"{device}:{registry.data['nodes'][device]['hash']}\n"


# PROTOCOL.md §13.5, under the task's prefix ("{me}": the node's own name)
COMMON_READS = "block/+ head/+ partial/+ presence/+ genesis revocations"
EXPECTED = {  # role: (writes, reads)
    "device": ("update/+/{me} sync/+ alert/{me} presence/{me}", "reply/{me} light/+ alert/+ " + COMMON_READS),
    "miner": (
        "gossip/+/{me} block/{me} light/{me} alert/{me} head/{me} partial/{me} sync/+ reply/+ presence/{me}",
        "update/{me}/+ gossip/{me}/+ sync/{me} reply/{me} " + COMMON_READS,
    ),
    "coordinator": ("genesis revocations presence/{me}", "# " + COMMON_READS),
    "observer": ("presence/{me}", "# " + COMMON_READS),
}


def lines_of(role: str, me: str) -> set[str]:
    writes, reads = EXPECTED[role]
    return {f"topic write {PREFIX}/{t.format(me=me)}" for t in writes.split()} | {
        f"topic read {PREFIX}/{t.format(me=me)}" for t in reads.split()
    }


@pytest.mark.parametrize("role", ["device", "miner", "coordinator", "observer"])
def test_each_role_gets_exactly_its_access_lines(registry, role):
    rules = registry.rules(role, "me-1")
    assert len(rules) == len(set(rules)) and set(rules) == lines_of(role, "me-1")


def test_a_bridge_may_do_what_each_enrolled_device_may_by_name_and_nothing_more(registry):
    d0, _ = registry.add("device", key("d0"))
    d1, _ = registry.add("device", key("d1"))
    gone, _ = registry.add("device", key("d2"))
    registry.revoke(gone)
    registry.add("miner", key("m0"))
    rules = registry.rules("bridge", "regional-1")
    assert len(rules) == len(set(rules))  # the lines devices share appear once
    assert set(rules) == lines_of("device", d0) | lines_of("device", d1)
    assert registry.rules("bridge", "x") == rules


def test_the_acl_file_has_a_header_then_one_block_per_live_node(registry):
    m0, _ = registry.add("miner", key("m0"))
    d0, _ = registry.add("device", key("d0"))
    bridge, _ = registry.add("bridge", key("b"), username="regional-1")
    text = registry.acl()
    assert text.endswith("\n")
    blocks = text.rstrip("\n").split("\n\n")
    assert blocks[0] == "# generated by blockfl from registry.json; do not edit"
    by_user = {b.splitlines()[0]: b.splitlines()[1:] for b in blocks[1:]}
    assert list(by_user) == [f"user {n}" for n in sorted([m0, d0, bridge])]
    assert set(by_user[f"user {m0}"]) == lines_of("miner", m0)
    assert set(by_user[f"user {d0}"]) == lines_of("device", d0)
    assert set(by_user[f"user {bridge}"]) == lines_of("device", d0)
    devices_only = registry.acl(("device",)).rstrip("\n").split("\n\n")
    assert [b.splitlines()[0] for b in devices_only[1:]] == [f"user {d0}"]


def test_render_writes_core_and_regional_files_and_can_render_again(registry, tmp_path):
    m0, _ = registry.add("miner", key("m0"))
    d0, _ = registry.add("device", key("d0"))
    broker = tmp_path / "etc" / "mosquitto" / "blockfl"  # parents that do not exist yet
    registry.render(broker)
    assert (broker / "passwd").read_text() == registry.passwd() and mode(broker / "passwd") == 0o600
    assert (broker / "acl").read_text() == registry.acl() and mode(broker / "acl") == 0o644
    regional = broker / "regional"
    assert (regional / "passwd").read_text() == registry.passwd(("device",)) and mode(regional / "passwd") == 0o600
    assert (regional / "acl").read_text() == registry.acl(("device",))
    assert f"user {m0}" not in (regional / "acl").read_text() and f"user {d0}" in (regional / "acl").read_text()
    registry.revoke(d0)
    registry.render(broker)  # after a revocation, over the files already there
    assert f"{d0}:" not in (broker / "passwd").read_text() and f"user {d0}" not in (regional / "acl").read_text()


def test_the_registry_keeps_hashes_in_a_private_file_and_reads_it_back(registry, tmp_path):
    name, password = registry.add("device", key("d0"))
    registry.revoke(name)
    registry.save()
    path = tmp_path / "task" / "registry.json"
    assert mode(path) == 0o600 and password not in path.read_text()
    assert path.read_text() == json.dumps(registry.data, indent=2)  # indented: an operator reads it
    again = Registry(tmp_path / "task", TASK)
    assert again.data == json.loads(path.read_text()) == registry.data
    assert again.revoked_keys() == [key("d0")]
    assert Registry(tmp_path / "elsewhere", TASK).data == {"nodes": {}}
