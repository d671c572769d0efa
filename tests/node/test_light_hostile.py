"""Hostile-peer review of light devices and alerts (PROTOCOL.md §13.6), driven by hand like
tests/node/test_light.py: a real light Device (real keys, SQLite, ONNX package), real mined
blocks, envelopes signed by real identities. Every test here is an attack that should fail."""

import dataclasses

import numpy as np
from test_light import _header, deliver, setup  # noqa: F401 (setup is a fixture)

from edge_sdk.chain.block_model import apply_updates
from edge_sdk.clock import now_ms
from edge_sdk.protocol import envelope
from edge_sdk.protocol.block import Update, make_update, seal_block
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.light import make_alert, make_light


def _resigned(identity, raw: bytes) -> bytes:
    """The same block body (header, updates, extras) in an envelope signed by someone else."""
    env = envelope.open_envelope(raw, expect="block", max_bytes=len(raw))
    return envelope.sign(identity, "block", env.body)


def test_an_alert_carrying_an_honest_header_in_a_re_signed_envelope_does_not_delete_the_honest_block(setup):  # noqa: F811
    """Any certified device (or any miner) takes an honest block, re-signs its body with its own
    key and alerts it. The light device validates the re-signed copy, gets bad_miner ("not signed by
    its header's miner"), and invalidates the honest header's hash: the honest block and everything
    on it are deleted and refused for ever (known_invalid). The accuser is never muted."""
    s, t = setup, setup.light.topics
    honest = s.block(updates=s.updates(s.honest.tip.hash, 2))
    state = s.honest.add(honest)
    deliver(s.light, t.light("m"), s.light_of(honest))
    assert s.light.store.tip.hash == state.hash

    attacker, cert = s.devices[2]
    deliver(s.light, t.alert("d2"), make_alert(attacker, s.task, _resigned(attacker, honest), cert))

    assert s.light.counters["alerts_confirmed"] == 0, "an alert about a copy the miner never signed proves nothing"
    assert s.light.store.tip.hash == state.hash and not s.light.store.is_invalid(state.hash)
    deliver(s.light, t.light("m"), s.light_of(honest))
    assert "known_invalid" not in s.light.rejections


def _updates_on(s, base: bytes, devices) -> list[bytes]:
    out = []
    for i, (identity, cert) in enumerate(devices):
        rng = np.random.default_rng(100 + i)
        delta = {n: (rng.standard_normal(sh) * 0.01).astype(np.float32) for n, sh in s.task.shapes.items()}
        out.append(make_update(identity, s.task, cert, base, 40, delta, now_ms()))
    return out


def test_a_lying_changed_flag_cannot_get_the_honest_full_nodes_muted(setup):  # noqa: F811
    """A miner publishes a valid block P with updates and a light block that says changed=false
    (§13.6: 'the publisher's word'). The light device's round base for P's children is now the
    genesis, the full nodes' is P. The miner then mines B on P with updates on the old base: full
    nodes refuse it (stale_base) and alert; the light device validates B against its own, wrong,
    state, finds it valid and mutes the honest accuser. Every full node that alerts on B is muted
    at once; from then on the miner's forged blocks are followed and never dropped."""
    s, t = setup, setup.light.topics
    genesis = s.honest.tip
    p_raw = s.block(updates=s.updates(genesis.hash, 2))
    p = s.honest.add(p_raw)
    assert p.base == p.hash  # P changed the model
    deliver(s.light, t.light("m"), s.light_of(p_raw, changed=False))  # the lie
    deliver(s.full, s.full.topics.block("m"), p_raw)
    assert s.light.store.tip.hash == p.hash == s.full.store.tip.hash

    # B on P: updates on the genesis base (stale for everyone who checked P in full)
    stale = _updates_on(s, genesis.hash, s.devices[2:4])
    parsed = [Update.parse(u, s.task) for u in stale]
    b_model = apply_updates(s.task, p.model, parsed)[1]
    b_raw = s.forged(stale, b_model)
    deliver(s.full, s.full.topics.block("m"), b_raw)
    assert s.full.rejections.get("stale_base") == 1 and s.full.counters["alerts_sent"] == 1
    honest_accuser, cert = s.devices[1]
    deliver(s.light, t.alert("d1"), make_alert(honest_accuser, s.task, b_raw, cert))
    # the light device's state rests on the lie, so B looks valid to it (the documented hole, §13.6);
    # what must not follow is that the honest accuser's later alerts are ignored
    assert s.light.counters["alerts_false"] == 1

    # what the muting buys: a forged block (its model is not its updates' aggregate) is followed for good
    tampered = {k: v + 1 for k, v in p.model.items()}
    forged = s.forged([], tampered)
    deliver(s.light, t.light("m"), make_light(s.miner, s.task, _header(forged), model=tampered, changed=True,
                                              revocations=None))  # fmt: skip
    deliver(s.full, s.full.topics.block("m"), forged)
    assert s.full.counters["alerts_sent"] == 2
    deliver(s.light, t.alert("d1"), make_alert(honest_accuser, s.task, forged, cert))
    assert s.light.store.tip.hash != _header(forged).hash


def test_junk_alerts_from_one_accuser_do_not_evict_an_honest_pending_alert(setup):  # noqa: F811
    """An honest alert waits (its block's parent is not known yet: the miner withholds the parent's
    light block). A certified device then sends 8 alerts for blocks on made-up parents: no proof of
    work, never checkable, so never judged false and never muted. They push the honest alert out
    of the 8 pending slots; full nodes alert at most once per block; the light device then follows
    the invalid block for good."""
    s, t = setup, setup.light.topics
    p_raw = s.block(updates=s.updates(s.honest.tip.hash, 2))
    p = s.honest.add(p_raw)
    honest_model = apply_updates(s.task, p.model, [Update.parse(u, s.task) for u in s.updates(p.hash, 2)])[1]
    inflated = {k: v * 4 for k, v in honest_model.items()}
    bad = s.forged(s.updates(p.hash, 2), inflated)

    honest_accuser, cert = s.devices[1]
    deliver(s.light, t.alert("d1"), make_alert(honest_accuser, s.task, bad, cert))
    assert len(s.light.light.pending) == 1  # waiting for P

    flooder, flooder_cert = s.devices[2]
    for i in range(8):  # unmined blocks on parents nobody has
        junk_header = dataclasses.replace(_header(bad), prev_hash=bytes([i + 1]) * 32)
        junk = seal_block(flooder, junk_header, [], Extras())
        deliver(s.light, t.alert("d2"), make_alert(flooder, s.task, junk, flooder_cert))

    deliver(s.light, t.light("m"), s.light_of(p_raw))
    deliver(s.light, t.light("m"), make_light(s.miner, s.task, _header(bad), model=inflated, changed=True,
                                              revocations=None))  # fmt: skip
    assert s.light.store.tip.hash != _header(bad).hash, "the invalid block is followed; its alert was evicted"


def test_pending_alerts_from_one_accuser_cost_work_linear_in_its_messages(setup, monkeypatch):  # noqa: F811
    """Found in review: pending alerts held up to 8 blocks of max_block_bytes from any one accuser,
    and every new alert, and every light block, validated all of them again from the envelope up,
    although their parents were still unknown. Now an accuser has one waiting alert, and a waiting
    alert costs nothing until its parent is known. (Counted with a pass-through spy on the real
    validate_block.)"""
    import edge_sdk.node.light as light_module

    s, t = setup, setup.light.topics
    validated = []
    real = light_module.validate_block

    def spy(raw, **kw):
        validated.append(len(raw))
        return real(raw, **kw)

    monkeypatch.setattr(light_module, "validate_block", spy)
    flooder, cert = s.devices[2]
    template = _header(s.block())
    big = [b"\0" * (256 * 1024)] * 4  # 1 MiB of opaque update bytes: Block.parse does not look inside
    for i in range(8):
        header = dataclasses.replace(template, prev_hash=bytes([i + 1]) * 32)
        deliver(s.light, t.alert("d2"), make_alert(flooder, s.task, seal_block(flooder, header, big, Extras()), cert))
    assert len(s.light.light.pending) <= 1  # at most one waiting alert per accuser (these prove nothing: none)
    validated.clear()
    small = seal_block(flooder, dataclasses.replace(template, prev_hash=b"\x77" * 32), [], Extras())
    alert = make_alert(flooder, s.task, small, cert)
    deliver(s.light, t.alert("d2"), alert)
    assert sum(validated) <= 4 * len(alert), f"{len(alert)}-byte alert cost {sum(validated)} bytes of validation"


def test_a_head_stream_faster_than_the_grace_still_starts_a_sync(setup):  # noqa: F811
    """on_head restarts a miner's 3 s grace with every new head, so while its heads come faster than
    every 3 s (target_interval below 3 s, or a busy round) and its light blocks are lost, the light
    device never syncs from it: it stays behind for as long as the stream lasts."""
    import time

    s, t = setup, setup.light.topics
    tip = s.light.store.tip.header
    heads = [dataclasses.replace(tip, height=tip.height + 1 + i, prev_hash=bytes([i + 1]) * 32) for i in range(3)]
    sent = s.light.counters["bytes_out"]
    deliver(s.light, t.head("m"), heads[0].encode())
    time.sleep(2.0)
    deliver(s.light, t.head("m"), heads[1].encode())
    s.light.light.tick()
    time.sleep(1.5)  # 3.5 s after the first unknown head
    deliver(s.light, t.head("m"), heads[2].encode())
    s.light.light.tick()
    assert s.light.counters["bytes_out"] > sent, "no sync request 3.5 s after an unknown head"
