"""The miner's forwards to its peers: sent again, backing off, only while the broker answers
"no matching subscribers", and never more than RETRIES times (a clock the test moves)."""

from coordinator.miner.forwarding import FIRST_RETRY_S, MAX_TRACKED, RETRIES, Forwarder
from edge_sdk.transport.mqtt import NO_MATCHING_SUBSCRIBERS, Acked


class Broker:
    """Records publishes and hands out message ids, as a connection's publish does."""

    def __init__(self):
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes) -> int:
        self.sent.append((topic, payload))
        return len(self.sent)


def forwarder():
    broker, counts, now = Broker(), [], [100.0]
    return broker, counts, now, Forwarder(broker.publish, counts.append, clock=lambda: now[0])


def test_a_forward_nobody_received_is_sent_again_with_backoff_then_given_up():
    broker, counts, now, fwd = forwarder()
    fwd.send("gossip/m1/m0", b"x")
    for attempt in range(RETRIES):
        fwd.acked(Acked(len(broker.sent), NO_MATCHING_SUBSCRIBERS))
        wait = FIRST_RETRY_S * 2**attempt
        assert fwd.wait_seconds(600.0) == wait
        now[0] += wait - 0.001
        fwd.send_due()
        assert len(broker.sent) == attempt + 1, "not before its time"
        now[0] += 0.001
        fwd.send_due()
        assert len(broker.sent) == attempt + 2 and broker.sent[-1] == ("gossip/m1/m0", b"x")
    fwd.acked(Acked(len(broker.sent), NO_MATCHING_SUBSCRIBERS))
    assert fwd.wait_seconds(600.0) == 600.0, "after RETRIES re-sends it gives up"
    assert counts == ["forwards_resent"] * RETRIES


def test_a_forward_the_broker_delivered_or_refused_is_not_sent_again():
    for reason in (0x00, 0x87):
        broker, _, now, fwd = forwarder()
        fwd.send("gossip/m1/m0", b"x")
        fwd.acked(Acked(1, reason))
        now[0] += 3600
        fwd.send_due()
        assert len(broker.sent) == 1


def test_acknowledgements_of_other_publishes_are_ignored():
    broker, _, now, fwd = forwarder()
    fwd.acked(Acked(42, NO_MATCHING_SUBSCRIBERS))
    now[0] += 3600
    fwd.send_due()
    assert broker.sent == [] and fwd.wait_seconds(5.0) == 5.0


def test_what_it_tracks_is_bounded():
    broker, _, _, fwd = forwarder()
    for i in range(MAX_TRACKED + 10):
        fwd.send("gossip/m1/m0", b"%d" % i)
    for mid in range(1, MAX_TRACKED + 11):
        fwd.acked(Acked(mid, NO_MATCHING_SUBSCRIBERS))
    assert len(fwd._due) == MAX_TRACKED, "beyond the bound a forward is sent once"
