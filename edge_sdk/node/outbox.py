"""A device's outbox: the update it signed for the current round, kept until a miner gives it an
outcome, and the round base it last signed for.

An update is delivered when a miner has durably pooled it (or refused it), not when the broker
acknowledges it: a broker killed before its next save, or a miner that never returns, loses what
the broker acknowledged. So the update stays in `outbox.bin` until the device sees an outcome: a
rejection naming it (`replay` among them: that miner already has it) or a new round base (a block
recorded it, or the round closed without it). Until then the device publishes it again: at once
after a reconnect or a change of miner, else when `resend_after_s` passed since the broker's last
acknowledgement (the round's wait plus a margin, doubling up to 8x). Miners take the same update
twice as a replay, so sending it again is always safe.

`signed_for.bin` holds the base of the last update signed: a second update on one base is evidence
against the device (PROTOCOL.md §7.2). When that file is damaged, or disagrees with the outbox, the
device takes the base of the last training its timeline recorded (or, without one, its tip's base)
as signed for, and sits out that round.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from edge_sdk.files import read_state, write_atomic
from edge_sdk.node.logs import event
from edge_sdk.node.status import Timeline
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.task import Task

log = logging.getLogger("blockfl.device")
OUTBOX_FILE = "outbox.bin"  # the update awaiting an outcome
SIGNED_FOR_FILE = "signed_for.bin"  # the base of the last update signed
RESEND_MARGIN_MS = 2000  # beyond the round's wait and two block intervals
MAX_BACKOFF = 8


class Outbox:
    def __init__(self, state_dir: Path, task: Task, device: bytes, tip_base: bytes, timeline: Timeline):
        """Loads both files; a damaged one is reported and set aside (files.read_state)."""
        self.path, self.signed_path = state_dir / OUTBOX_FILE, state_dir / SIGNED_FOR_FILE
        rounds = task.rounds
        self.resend_after_s = (rounds.max_wait_ms + 2 * task.chain.target_interval_ms + RESEND_MARGIN_MS) / 1000
        self.update: bytes | None = None  # the signed update envelope
        self.base: bytes | None = None
        self.in_flight: int | None = None  # its message id while the broker has not acknowledged it
        self.due = 0.0  # monotonic time from which it may be published (again)
        self.sends = self.acks = 0

        def parse_update(raw: bytes) -> Update:
            update = Update.parse(raw, task)  # signature included: a foreign or forged file is damaged too
            if update.device != device:
                raise ValueError("an update signed by another device")
            return update

        def parse_base(raw: bytes) -> bytes:
            if len(raw) != 32:
                raise ValueError(f"{len(raw)} bytes, not a 32-byte block hash")
            return raw

        held = read_state(self.path, parse_update)
        if held is not None:
            self.update, self.base = held.envelope.raw, held.base
        recorded = self.signed_path.exists()
        signed = read_state(self.signed_path, parse_base)
        if signed is not None and (held is None or held.base == signed):
            self.signed_for: bytes | None = signed
        elif held is None and not recorded:
            self.signed_for = None  # a new device: it never signed
        else:  # the record is lost: the timeline saw every training, and the tip is the likeliest base
            trained = [e["base"] for e in timeline.entries() if e.get("event") == "trained" and "base" in e]
            self.signed_for = (_hash(trained[-1]) if trained else None) or tip_base
            write_atomic(self.signed_path, self.signed_for)
            event(log, logging.WARNING, "signed-for record lost; sitting out a round", base=self.signed_for.hex()[:16])

    @property
    def digest(self) -> bytes | None:
        return None if self.update is None else hashlib.sha256(self.update).digest()

    def hold(self, update: bytes, base: bytes) -> None:
        """A new update: on disk first (outbox, then the base it is signed for), then due at once."""
        write_atomic(self.path, update)
        write_atomic(self.signed_path, base)
        self.update, self.base, self.signed_for = update, base, base
        self.in_flight, self.due, self.sends, self.acks = None, 0.0, 0, 0

    def drop(self) -> None:
        """An outcome (or a stale base): nothing more to send."""
        self.update = self.base = self.in_flight = None
        self.path.unlink(missing_ok=True)

    def ready(self, now: float) -> bool:
        return self.update is not None and self.in_flight is None and now >= self.due

    def published(self, mid: int) -> None:
        self.in_flight = mid
        self.sends += 1

    def send_now(self) -> None:
        """A reconnect or another miner: publish at once (whatever was on its way may be lost)."""
        self.in_flight, self.due = None, 0.0

    def retry_in(self, seconds: float) -> None:
        self.in_flight, self.due = None, time.monotonic() + seconds

    def acknowledged(self) -> None:
        """The broker has it: wait for an outcome, then publish again (the wait doubles each time)."""
        self.retry_in(self.resend_after_s * min(MAX_BACKOFF, 2**self.acks))
        self.acks += 1


def _hash(text: object) -> bytes | None:
    """A block hash from a timeline line (hex), or None."""
    try:
        value = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        return None
    return value if len(value) == 32 else None
