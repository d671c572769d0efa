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

`signed_for.bin` holds the bases of the last MAX_SIGNED updates signed (newest last): a second
update on one base is evidence against the device (PROTOCOL.md §7.2), and a reorganisation can
bring an earlier round base back (blocks that change no model keep their parent's base), so the
device never trains on any base in that list. The outbox is written before the list, so an update
held is always counted as signed. When the list is damaged or lost (or a damaged copy of it is
found), the device counts as signed every base its timeline saw it train on, the held update's and
its tip's, and so sits out that round.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from edge_sdk.files import DAMAGED_SUFFIX, read_state, write_atomic
from edge_sdk.node.logs import event
from edge_sdk.node.status import Timeline
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.task import Task

log = logging.getLogger("blockfl.device")
OUTBOX_FILE = "outbox.bin"  # the update awaiting an outcome
SIGNED_FOR_FILE = "signed_for.bin"  # the bases of the last MAX_SIGNED updates signed, 32 bytes each
MAX_SIGNED = 64  # above any max_reorg_depth worth running: a reorganisation deeper than that is refused
RESEND_MARGIN_MS = 2000  # beyond the round's wait and two block intervals
MAX_BACKOFF = 8
MIN_GAP_S = 2.0  # between two copies of one update, however often the miner changes (a flapping presence)


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
        self.last_sent = float("-inf")

        def parse_update(raw: bytes) -> Update:
            update = Update.parse(raw, task)  # signature included: a foreign or forged file is damaged too
            if update.device != device:
                raise ValueError("an update signed by another device")
            return update

        def parse_bases(raw: bytes) -> list[bytes]:
            if not raw or len(raw) % 32 or len(raw) > 32 * MAX_SIGNED:
                raise ValueError(f"{len(raw)} bytes, not 1 to {MAX_SIGNED} 32-byte block hashes")
            return [raw[i : i + 32] for i in range(0, len(raw), 32)]

        held = read_state(self.path, parse_update)
        if held is not None:
            self.update, self.base = held.envelope.raw, held.base
        damaged = self.signed_path.with_name(self.signed_path.name + DAMAGED_SUFFIX)
        recorded = self.signed_path.exists() or damaged.exists()
        signed = read_state(self.signed_path, parse_bases)
        if signed is not None:
            self.signed = signed + ([held.base] if held is not None and held.base not in signed else [])
        elif held is None and not recorded:
            self.signed = []  # a new device: it never signed
        else:  # the record is lost: count every base the timeline saw it train on, and the tip's
            trained = [_hash(e.get("base")) for e in timeline.entries() if e.get("event") in ("train", "trained")]
            self.signed = [b for b in trained if b is not None][-MAX_SIGNED + 2 :]
            self.signed += [b for b in (held.base if held else None, tip_base) if b is not None]
            event(log, logging.WARNING, "signed-for record lost; sitting out a round", bases=len(self.signed))
        self.signed = list(dict.fromkeys(self.signed))[-MAX_SIGNED:]
        if signed != self.signed:
            write_atomic(self.signed_path, b"".join(self.signed))

    @property
    def signed_for(self) -> bytes | None:
        """The base of the last update signed."""
        return self.signed[-1] if self.signed else None

    def has_signed(self, base: bytes) -> bool:
        return base in self.signed

    @property
    def digest(self) -> bytes | None:
        return None if self.update is None else hashlib.sha256(self.update).digest()

    def hold(self, update: bytes, base: bytes) -> None:
        """A new update: on disk first (outbox, then the base it is signed for), then due at once."""
        write_atomic(self.path, update)
        self.signed = [b for b in self.signed if b != base][-(MAX_SIGNED - 1) :] + [base]
        write_atomic(self.signed_path, b"".join(self.signed))
        self.update, self.base = update, base
        self.in_flight, self.due, self.sends, self.acks, self.last_sent = None, 0.0, 0, 0, float("-inf")

    def drop(self) -> None:
        """An outcome (or a stale base): nothing more to send."""
        self.update = self.base = self.in_flight = None
        self.path.unlink(missing_ok=True)

    def ready(self, now: float) -> bool:
        return self.update is not None and self.in_flight is None and now >= self.due

    def published(self, mid: int) -> None:
        self.in_flight = mid
        self.sends += 1
        self.last_sent = time.monotonic()

    def send_now(self) -> None:
        """A reconnect or another miner: publish at once (whatever was on its way may be lost), but
        not sooner than MIN_GAP_S after the last copy, so presence flapping costs one copy, not many."""
        self.in_flight, self.due = None, self.last_sent + MIN_GAP_S

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
