"""What a node keeps about a block, fork choice, and the one way every chain view walks ancestors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge_sdk.chain.opening import Aggregate, Opened
from edge_sdk.protocol.block import Header
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.fixedpoint import Model
from edge_sdk.protocol.revocations import NO_REVOCATIONS, RevocationList


@dataclass(frozen=True, eq=False)  # compare blocks by .hash; models are arrays
class BlockState:
    """What a node keeps about an accepted block: enough to validate its children."""

    header: Header
    cumwork: int
    model: Model | None  # None below a snapshot's checkpoint, and in Paillier modes until the aggregate is opened
    base: bytes  # the last block on this branch that changed the model (or genesis): updates for a child name it
    base_ms: int  # that block's timestamp
    revocations: RevocationList = NO_REVOCATIONS  # the newest list carried on this branch, up to this block
    aggregate: Aggregate | None = None  # Paillier modes, a block with updates: what its children open
    opened: Opened | None = None  # Paillier modes: the parent's model, as this block's decryption revealed it

    @property
    def hash(self) -> bytes:
        return self.header.hash


def is_better(candidate: BlockState, current: BlockState) -> bool:
    """Fork choice: more cumulative work wins; equal work goes to the lower block hash."""
    if candidate.cumwork != current.cumwork:
        return candidate.cumwork > current.cumwork
    return candidate.hash < current.hash


class ChainView(Protocol):
    """What block validation needs from a chain: states of known blocks and headers of ancestors."""

    def get(self, block_hash: bytes) -> BlockState | None: ...

    def ancestor(self, block_hash: bytes, height: int) -> Header: ...


class HeaderWalk:
    """Ancestor walks for any view that can look a header up by hash (in memory, SQLite, a replay)."""

    def header(self, block_hash: bytes) -> Header | None:
        raise NotImplementedError

    def ancestor(self, block_hash: bytes, height: int) -> Header:
        """The header at `height` on the branch that ends in `block_hash`."""
        header = self.header(block_hash)
        while header is not None and header.height > height:
            header = self.header(header.prev_hash)
        if header is None or header.height != height:
            raise ProtocolError(Reason.BAD_HEIGHT, f"no ancestor at height {height}")
        return header

    def branch(self, block_hash: bytes) -> list[Header]:
        """Headers from genesis to `block_hash`."""
        headers = [self.header(block_hash)]
        while headers[-1].height > 0:
            headers.append(self.header(headers[-1].prev_hash))
        return headers[::-1]
