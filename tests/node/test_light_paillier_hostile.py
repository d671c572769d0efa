"""Paillier light blocks (PROTOCOL.md §13.6), at the store: a real Paillier task (small key), a
real light store on SQLite, light blocks signed by the task's miner and mined for real."""

import secrets

import gmpy2

from coordinator.miner.assembly import search_nonce
from coordinator.task.setup import init_task
from edge_sdk.chain.opening import Aggregate, encrypted_aggregate
from edge_sdk.chain.rules import expected_target
from edge_sdk.chain.store import ChainStore
from edge_sdk.clock import now_ms
from edge_sdk.privacy import paillier
from edge_sdk.protocol.block import block_template
from edge_sdk.protocol.errors import ProtocolError
from edge_sdk.protocol.extras import Extras
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.light import make_light, parse_light
from edge_sdk.protocol.task import TrainingParams


def _ciphertexts(task) -> list[int]:
    packing = task.privacy.packing
    n2 = packing.n * packing.n
    count = packing.ciphertext_count(sum(v.size for v in task.initial_model.values()))
    out = []
    while len(out) < count:
        c = secrets.randbelow(n2)
        if c and gmpy2.gcd(c, packing.n) == 1:
            out.append(c)
    return out


def _mined(store, miner, parent, commitment):
    task = store.task
    header = block_template(
        parent=parent.header, task=task, miner=miner.public.sign_pk, update_bytes=[], extras=Extras(),
        commitment=commitment, timestamp_ms=max(now_ms(), parent.header.timestamp_ms),
        target=expected_target(task, parent.header, store),
    )  # fmt: skip
    return search_nonce(header)


def test_an_empty_paillier_light_block_on_an_unopened_parent_gets_its_model_when_the_parent_opens(tmp_path):
    """Paillier: a light block with no aggregate takes its parent's model (light_rules.py). If it
    arrives before the light device has t gossiped partials of the parent's aggregate (a race; or a
    share holder that puts its partial only into the block, never on partial/), it is stored with
    neither model nor aggregate. Opening the parent later (store.set_model) does not reach it: the
    device never trains on it, and every child is refused as unknown_parent, light or full (a sync
    returns the child, store.add refuses it again, and asks again: a sync loop with the miner).
    Full nodes give that block the parent's opened model (from its decryption extras)."""
    miner = Identity.from_seed(b"paillier-light-miner")
    init_task(
        tmp_path / "task", miners=[miner.public], training=TrainingParams(1, 16, 0.1), initial_hashes=2_000,
        privacy="paillier", paillier_bits=1024, min_participants=2,
    )  # fmt: skip
    store = ChainStore(tmp_path / "light.db", (tmp_path / "task" / "genesis.block").read_bytes())
    task = store.task
    packing = task.privacy.packing
    genesis = store.tip

    # P: a block with updates, its encrypted aggregate in the light block
    cts, weight = _ciphertexts(task), 3
    p_header = _mined(store, miner, genesis, paillier.aggregate_hash(cts, weight, packing))
    p_light = make_light(miner, task, p_header, model=None, aggregate=Aggregate(tuple(cts), weight), changed=True,
                         revocations=None)  # fmt: skip
    p, _ = store.add_light(parse_light(p_light, task))
    assert p.model is None and p.aggregate is not None

    # E: an empty block on P (it carries P's decryption, which a light device does not download)
    none = encrypted_aggregate(task, [])
    e_header = _mined(store, miner, p, paillier.aggregate_hash(list(none.ciphertexts), none.weight, packing))
    e_light = make_light(miner, task, e_header, model=None, aggregate=None, changed=False, revocations=None)
    store.add_light(parse_light(e_light, task))

    # t partials of P arrive (Openings.try_open records P's model)
    opened = {k: v.copy() for k, v in genesis.model.items()}
    assert store.set_model(p.hash, opened)
    e = store.get(e_header.hash)
    assert e.model is not None, "the empty block on P never gets P's opened model"

    # and its children are refused for ever
    f_header = _mined(store, miner, e, paillier.aggregate_hash(cts, weight, packing))
    f_light = make_light(miner, task, f_header, model=None, aggregate=Aggregate(tuple(cts), weight), changed=True,
                         revocations=None)  # fmt: skip
    try:
        store.add_light(parse_light(f_light, task))
    except ProtocolError as exc:
        raise AssertionError(f"a child of the empty block is refused: {exc.reason.value}") from None
    store.close()
