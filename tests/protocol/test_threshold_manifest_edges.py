"""Edges of the manifest's `privacy.threshold` section (protocol/decryption.py, DecryptionRules):
every bound on t, the holder count and min_participants accepted on one side and refused on the
other, the exact wire form, and each element's width and range."""

import pytest
from paillier_vector_key import KEY, N2, PRIME_Q, TASK, N

from edge_sdk.protocol.decryption import DecryptionRules, ThresholdKey
from edge_sdk.protocol.errors import ProtocolError, Reason

RULES = TASK.privacy.threshold
V = KEY.v.to_bytes(128, "big")
BOUNDS = "1 <= t <= len(vks) <= 64"
LEAST = "min_participants >= 2, and t >= 2 unless there is one miner"


def wire(t: int = 2, holders: int = 3, least: int = 2, **change) -> dict:
    return {"t": t, "min_participants": least, "v": V, "vks": [V] * holders, **change}


def refusal(value) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        DecryptionRules.from_wire(value, N)
    return info.value


def test_the_section_is_t_min_participants_and_fixed_width_elements():
    assert RULES.to_wire() == {
        "t": 2,
        "min_participants": RULES.min_participants,
        "v": V,
        "vks": [vk.to_bytes(128, "big") for vk in KEY.verification_keys],
    }
    assert DecryptionRules.from_wire(RULES.to_wire(), N) == RULES


def test_elements_keep_their_width_when_their_top_bytes_are_zero():
    small = DecryptionRules(ThresholdKey(N, 1, 4, (9,)), 2).to_wire()
    assert small["v"] == bytes(127) + b"\x04" and small["vks"] == [bytes(127) + b"\x09"]
    assert DecryptionRules.from_wire(small, N).key == ThresholdKey(N, 1, 4, (9,))


@pytest.mark.parametrize(
    "t, holders, least",
    [(1, 1, 2), (2, 2, 2), (3, 3, 2), (2, 64, 2), (64, 64, 5), (2, 3, 2)],
    ids=["one miner", "2 of 2", "t = holders", "64 holders", "64 of 64", "least 2"],
)
def test_accepted_thresholds(t, holders, least):
    rules = DecryptionRules.from_wire(wire(t, holders, least), N)
    assert (rules.key.threshold, rules.key.holders, rules.min_participants) == (t, holders, least)
    assert (rules.key.n, rules.key.v, rules.key.verification_keys) == (N, KEY.v, (KEY.v,) * holders)


@pytest.mark.parametrize(
    "t, holders, least, detail",
    [
        (1, 0, 2, BOUNDS),
        (2, 65, 2, BOUNDS),
        (0, 3, 2, BOUNDS),
        (4, 3, 2, BOUNDS),
        (1, 2, 2, LEAST),
        (1, 3, 2, LEAST),
        (2, 3, 1, LEAST),
        (1, 1, 1, LEAST),
    ],
    ids=["no holder", "65 holders", "t = 0", "t > holders", "1 of 2", "1 of 3", "least 1", "least 1 one miner"],
)
def test_refused_thresholds(t, holders, least, detail):
    error = refusal(wire(t, holders, least))
    assert error.reason is Reason.BAD_BODY and error.detail == f"privacy.threshold: {detail}"


@pytest.mark.parametrize(
    "value",
    [
        wire(t=True),
        wire(t="2"),
        wire(least=2.0),
        wire(least=None),
        wire(vks=tuple([V] * 3)),
        wire(vks=V),
        wire(extra=1),
        {k: v for k, v in wire().items() if k != "vks"},
        [wire()],
    ],
    ids=["t bool", "t str", "least float", "least none", "vks tuple", "vks bytes", "extra key", "no vks", "a list"],
)
def test_malformed_sections_are_bad_bodies(value):
    error = refusal(value)
    assert error.reason is Reason.BAD_BODY and error.detail.startswith("privacy.threshold")


@pytest.mark.parametrize("field", ["v", "vk"])
@pytest.mark.parametrize("element", [V[1:], V + b"\x00", KEY.v], ids=["127 bytes", "129 bytes", "an int"])
def test_an_element_of_another_width_is_a_bad_shape(field, element):
    value = wire(v=element) if field == "v" else wire(vks=[V, element, V])
    error = refusal(value)
    assert error.reason is Reason.BAD_SHAPE and error.detail == "privacy.threshold: elements are 128 bytes"


@pytest.mark.parametrize("x", [0, N, PRIME_Q * 3, N2, N2 + 1], ids=["0", "n", "multiple of q", "n^2", "n^2 + 1"])
def test_an_element_outside_z_star_n_squared_is_out_of_range(x):
    error = refusal(wire(vks=[V, V, x.to_bytes(128, "big")]))
    assert error.reason is Reason.OUT_OF_RANGE and error.detail == "privacy.threshold: element outside Z*_(n^2)"
