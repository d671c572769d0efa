"""The ledger on blocks whose evidence is as large as a block may be: a miner convicted by an
invalid block of more than 16 MiB (blocks may reach max_block_bytes, 64 MiB by default) forfeits
its deposit like any other."""

from conftest import make_federation

from edge_sdk.chain.ledger import balances
from edge_sdk.protocol import envelope
from edge_sdk.protocol.extras import Evidence, Extras
from edge_sdk.protocol.identity import Identity, node_id


def test_a_conviction_by_an_invalid_block_over_16_mib_takes_the_deposit():
    fed = make_federation(peers=1)
    rogue = Identity.from_seed(b"peer-0-0")
    huge = envelope.sign(rogue, "block", {"padding": bytes(17 << 20)})  # what the carrier's rules checked
    assert len(huge) > envelope.DEFAULT_MAX_BYTES
    chain = fed.chain()
    carrier = fed.forged(chain, extras=Extras(evidence=(Evidence("invalid-block", (huge,)),)), mine=False)
    ledger = balances(fed.task, [carrier])
    assert ledger[node_id(rogue.public.sign_pk)] == -fed.task.rewards.deposit
