"""The broker's access rules, tried in full: every role publishes on every topic of PROTOCOL.md §13
(with its own id and with another node's) and subscribes to each, against a real Mosquitto with the
passwd and acl files the coordinator's registry renders. Each outcome is checked against the matrix
below, written from §13.5 (not from the registry's code).

Refused publish: the PUBACK reason 0x87 of a QoS 1 publish. Refused read: every allowed write was
also retained, so a subscription to a readable topic delivers its message at once; the reader
subscribes to genesis last (every role reads it) and its retained message is the marker: the broker
sends retained messages in subscription order, so once genesis arrived, a topic whose message
has not is not readable."""

import paho.mqtt.client as mqtt
import pytest
from testbed import Client, Testbed

from coordinator.task.setup import coordinator_broker

pytestmark = pytest.mark.timeout(60)
NOT_AUTHORIZED = 0x87
ACCEPTED = (0x00, 0x10)  # 0x10: accepted, no matching subscribers

# PROTOCOL.md §13.5, per role: topic filters under the task's prefix ("{me}": the node's own id)
WRITES = {
    "device": ["update/+/{me}", "sync/+", "presence/{me}", "alert/{me}"],
    "miner": ["gossip/+/{me}", "block/{me}", "light/{me}", "head/{me}", "partial/{me}", "reply/+", "sync/+",
              "alert/{me}", "presence/{me}"],
    "coordinator": ["genesis", "revocations", "presence/{me}"],
    "observer": ["presence/{me}"],
}  # fmt: skip
READS = {
    "device": ["block/+", "head/+", "partial/+", "light/+", "alert/+", "reply/{me}", "presence/+", "genesis",
               "revocations"],
    "miner": ["update/{me}/+", "gossip/{me}/+", "sync/{me}", "reply/{me}", "block/+", "head/+", "partial/+",
              "presence/+", "genesis", "revocations"],
    "coordinator": ["#"],
    "observer": ["#"],
}  # fmt: skip


def topics(m: list[str], d: list[str], c: str, o: str) -> list[str]:
    """Every topic of the §13 table, with both miners' and both devices' ids where it names a node."""
    return [
        "genesis",
        "revocations",
        *(f"update/{x}/{y}" for x in m for y in d),
        *(f"gossip/{x}/{y}" for x in m for y in m),
        *(f"{kind}/{x}" for kind in ("block", "light", "head", "partial", "sync") for x in m),
        *(f"{kind}/{x}" for kind in ("alert", "reply") for x in m + d),
        *(f"presence/{x}" for x in [*m, *d, c, o]),
    ]


def allowed(rules: list[str], me: str, topic: str) -> bool:
    return any(mqtt.topic_matches_sub(rule.format(me=me), topic) for rule in rules)


@pytest.fixture
def bed(tmp_path):
    bed = Testbed(tmp_path, miners=2, devices=2)
    yield bed
    bed.close()


def reads(bed: Testbed, credentials: tuple[str, str], names: list[str]) -> set[str]:
    """The topics among `names` whose retained message reaches this user (genesis, subscribed last, is the marker)."""
    prefix = bed.topics.prefix + "/"
    reader = Client(bed.port, *credentials)
    try:
        for name in [n for n in names if n != "genesis"] + ["genesis"]:
            reader.subscribe(prefix + name)
        assert reader.wait_for(lambda topic, _: topic == prefix + "genesis", 10), "genesis never arrived"
        return {topic[len(prefix) :] for topic, _ in reader.messages}
    finally:
        reader.close()


def test_every_role_may_write_and_read_exactly_what_the_protocol_allows(bed):
    m = [x.node_id for x in bed.task.miners]
    d = [x.public.node_id for x in bed.device_ids]
    coordinator = coordinator_broker(bed.root / "task", bed.url)
    c, o = coordinator.username, bed.observer[0]
    names = topics(m, d, c, o)
    actors = [  # (role, own id, credentials): one miner and one device play theirs, the others are "another"
        ("coordinator", c, (coordinator.username, coordinator.password)),
        ("observer", o, bed.observer),
        ("miner", m[0], bed.credentials("m0")),
        ("miner", m[1], bed.credentials("m1")),
        ("device", d[0], bed.credentials("d0")),
        ("device", d[1], bed.credentials("d1")),
    ]
    wrong = []
    for role, me, credentials in actors:  # writes: every topic, retained, so readers find a message
        writer = Client(bed.port, *credentials)
        for name in names:
            code = writer.publish(f"{bed.topics.prefix}/{name}", f"{role} {me}".encode(), retain=True)
            expected = allowed(WRITES[role], me, name)
            if code not in (ACCEPTED if expected else (NOT_AUTHORIZED,)):
                wrong.append(f"{role} {me[:6]} write {name}: PUBACK {code}, expected {'allowed' if expected else 0x87}")
        writer.close()
    for role, me, credentials in actors[:3] + actors[4:5]:  # reads: one of each role
        readable = reads(bed, credentials, names)
        for name in names:
            if (name in readable) != allowed(READS[role], me, name):
                wrong.append(f"{role} {me[:6]} read {name}: {'delivered' if name in readable else 'not delivered'}")
    assert not wrong, "\n".join(wrong)
