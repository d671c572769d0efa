"""Rewards to the unit, computed by hand for a small chain (PROTOCOL.md §13.4): the mining reward
only for blocks that aggregate rounds.min_updates updates, per-sample rewards on capped weights,
nothing for an excluded update, and each convicted key's deposit taken once."""

import dataclasses
from hashlib import sha256

from conftest import make_federation

from coordinator.miner.assembly import build_block
from edge_sdk.chain.ledger import balances
from edge_sdk.clock import now_ms
from edge_sdk.protocol.aggregation_rule import AggregationRule
from edge_sdk.protocol.block import Block, make_genesis
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.extras import Evidence
from edge_sdk.protocol.identity import Identity
from edge_sdk.protocol.task import RewardRules, RoundRules


def ledger_federation():
    """Six devices, two miners; min_updates 3, weight cap 2, an absolute norm bound of 1 (honest
    deltas have norm ~0.05); rewards 7 per block, 3 per weighted sample, deposit 50."""
    fed = make_federation(
        devices=6, peers=1, rounds=RoundRules(min_updates=3), aggregation=AggregationRule(norm_bound=1.0, weight_cap=2)
    )
    fed.task = dataclasses.replace(fed.task, rewards=RewardRules(mining=7, per_sample=3, deposit=50))
    fed.genesis = make_genesis(fed.coordinator, fed.task)
    fed.certs = [
        issue_certificate(fed.coordinator, fed.task, d.public, quota=10_000, expires_ms=now_ms() + 3_600_000)
        for d in fed.devices
    ]
    return fed


def test_balances_of_a_small_chain_are_the_hand_computed_ones():
    fed = ledger_federation()
    m0, m1 = fed.miner, Identity.from_seed(b"peer-0-0")
    chain = fed.chain()

    def mine(miner, updates, evidence=()):
        tip = chain.tip
        raw = build_block(
            identity=miner, task=fed.task, chain=chain, parent=tip, updates=updates, now_ms=now_ms(), evidence=evidence
        )
        chain.add(raw)
        return raw

    # B1 by m0: claims 100, 40, 500 and 60 (d3, its delta 300 times too large: excluded by the norm bound).
    # Lower median of all four claims 60, cap 120: weights 100, 40, 120 (d3 0). 3 aggregated: m0 earns 7.
    base = chain.tip.base
    poison = {k: v * 300 for k, v in fed.delta(3).items()}
    b1 = mine(
        m0,
        [
            fed.update(0, base, samples=100),
            fed.update(1, base, samples=40),
            fed.update(2, base, samples=500),
            fed.update(3, base, samples=60, delta=poison),
        ],
    )
    assert Block.parse(b1, 1 << 30).extras.excluded == (3,)
    # B2 by m1: claims 10, 30 and 5 (d3, poisoned again: excluded), lower median 10, cap 20: weights
    # 10, 20. Three updates but two aggregated: m1 earns nothing (updates minus exclusions count).
    # It carries double-update evidence against d5 (two updates on one base).
    base = chain.tip.base
    double = tuple(sorted([fed.update(5, base, seed=1), fed.update(5, base, seed=2)], key=lambda r: sha256(r).digest()))
    accuse_d5 = Evidence("double-update", double)
    b2 = mine(
        m1,
        [
            fed.update(0, base, samples=10),
            fed.update(4, base, samples=30),
            fed.update(3, base, samples=5, delta=poison),
        ],
        [accuse_d5],
    )
    assert Block.parse(b2, 1 << 30).extras.excluded == (2,)
    # B3 by m0: claims 200 each (cap 400): weights 200. m0 earns 7. It carries d5's evidence again
    # (its deposit goes once) and m1's invalid sibling block (m1 convicted).
    base = chain.tip.base
    bad = fed.forged(chain, signer=m1, miner=m1.public.sign_pk, model_hash=bytes(32))
    accuse_m1 = Evidence("invalid-block", (bad,))
    mine(m0, [fed.update(i, base, samples=200) for i in (1, 2, 5)], [accuse_d5, accuse_m1])

    blocks = [chain.raw[h.hash] for h in chain.branch(chain.tip.hash)[1:]]
    assert len(blocks) == 3
    ids = {f"d{i}": d.public.node_id for i, d in enumerate(fed.devices)}
    expected = {
        m0.public.node_id: 7 + 7,
        m1.public.node_id: 0 - 50,
        ids["d0"]: 3 * 100 + 3 * 10,
        ids["d1"]: 3 * 40 + 3 * 200,
        ids["d2"]: 3 * 120 + 3 * 200,
        ids["d4"]: 3 * 20,
        ids["d5"]: 3 * 200 - 50,
    }  # d3: excluded, earns nothing and is not listed
    assert balances(fed.task, blocks) == expected
    assert expected == {
        m0.public.node_id: 14,
        m1.public.node_id: -50,
        ids["d0"]: 330,
        ids["d1"]: 720,
        ids["d2"]: 960,
        ids["d4"]: 60,
        ids["d5"]: 550,
    }
