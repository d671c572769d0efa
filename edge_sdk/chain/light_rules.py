"""What a light device checks of a light block, and what it then knows about the block.

It checks everything the header alone proves (link, height, retarget, proof-of-work, miner set,
time), that the model or aggregate is the one the header commits to, and that a revocation list
is the coordinator's and newer than its chain's. It cannot check that the commitment is the
right aggregate of the block's updates, nor the `changed` flag: a block that lies there breaks a
block rule, and full nodes alert on it (node/light.py), which is why light verification assumes
one honest full node that the device hears from.
"""

from __future__ import annotations

from edge_sdk.chain.opening import Aggregate, encrypted_aggregate
from edge_sdk.chain.rules import check_header, check_revocations
from edge_sdk.chain.view import BlockState, ChainView
from edge_sdk.privacy import paillier
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import model_hash
from edge_sdk.protocol.light import LightBlock
from edge_sdk.protocol.task import Task
from edge_sdk.protocol.work import work


def light_state(light: LightBlock, task: Task, chain: ChainView, now_ms: int) -> BlockState:
    """The state a light device keeps for a light block on a known parent; raises ProtocolError."""
    header = light.header
    parent = chain.get(header.prev_hash)
    if parent is None or (parent.model is None and parent.aggregate is None):
        raise ProtocolError(Reason.UNKNOWN_PARENT, f"parent {header.prev_hash.hex()[:16]} is not known")
    check_header(header, parent.header, task, chain, now_ms)
    revocations = check_revocations(light.revocations, parent, task)
    model, aggregate = light.model, None
    if task.privacy.encrypted:
        if light.ciphertexts is not None:
            aggregate = Aggregate(tuple(light.ciphertexts), light.weight)
        else:  # no updates: the commitment is that of the empty aggregate, the model the parent's
            aggregate_of_none = encrypted_aggregate(task, [])
            model = None if parent.model is None else {k: v.copy() for k, v in parent.model.items()}
        shown = aggregate or aggregate_of_none
        commitment = paillier.aggregate_hash(list(shown.ciphertexts), shown.weight, task.privacy.packing)
        if aggregate is not None and not light.changed:
            raise ProtocolError(Reason.BAD_BODY, "a Paillier block with an aggregate changes the model")
    else:
        commitment = model_hash(model, task.chain.frac_bits)
    if commitment != header.model_hash:
        raise ProtocolError(Reason.BAD_MODEL_HASH, "the light block's model is not the one its header commits to")
    return BlockState(
        header,
        parent.cumwork + work(header.target),
        model,
        header.hash if light.changed else parent.base,
        header.timestamp_ms if light.changed else parent.base_ms,
        revocations,
        aggregate,
    )
