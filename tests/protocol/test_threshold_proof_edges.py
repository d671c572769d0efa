"""Edges of threshold decryption (privacy/threshold.py) on the vector's real key: which share
matches its verification key, which proofs verify at the bounds of their range, the size of the
proof's randomness, the Lagrange coefficients, and which partials `combine` uses."""

import pytest
from paillier_vector_key import AGGREGATE, KEY, N2, ORDER, PARTIALS, PRIME_P, SHARES, P, num, proven

from edge_sdk.privacy import threshold
from edge_sdk.protocol.decryption import Proof, ThresholdKey

SUMS = [num(m) for m in P["combine"][0]["plaintexts"]]


def test_every_dealt_share_matches_its_verification_key_and_no_other():
    assert all(s.matches(KEY) for s in SHARES)
    one, three = SHARES[0], SHARES[2]
    assert not threshold.KeyShare(1, one.value + 1).matches(KEY)
    assert not threshold.KeyShare(3, one.value).matches(KEY)
    assert not threshold.KeyShare(1, three.value).matches(KEY)


@pytest.mark.parametrize("index", [0, 4, -1])
def test_a_share_index_outside_1_to_m_matches_nothing(index):
    assert not threshold.KeyShare(index, SHARES[0].value).matches(KEY)


@pytest.mark.parametrize("index", [0, 4, 5])
def test_a_proof_for_an_index_outside_1_to_m_does_not_verify(index):
    item = proven(3 if index == 0 else 1)
    assert not threshold.verify(KEY, index, AGGREGATE, list(item.partials), item.proof)


def test_a_proof_over_fewer_partials_than_ciphertexts_does_not_verify():
    item = proven(1)
    assert threshold.verify(KEY, 1, AGGREGATE, list(item.partials), item.proof)
    assert not threshold.verify(KEY, 1, AGGREGATE, list(item.partials[:1]), item.proof)
    assert not threshold.verify(KEY, 1, AGGREGATE[:1], list(item.partials), item.proof)


def test_a_prover_must_give_one_partial_per_ciphertext():
    with pytest.raises(ValueError):
        threshold.prove(SHARES[0], KEY, AGGREGATE, PARTIALS[1][:1])
    with pytest.raises(ValueError):
        threshold.batch(KEY, 1, AGGREGATE, [*PARTIALS[1], PARTIALS[1][0]])


def test_a_response_that_satisfies_the_equations_verifies_only_below_2_to_the_r_plus_1():
    """z + k * ORDER passes both exponent equations for every k; only the range check refuses it."""
    item = proven(2)
    partials, (e, z) = list(item.partials), (item.proof.challenge, item.proof.response)
    bound = 1 << KEY.response_bits
    assert z < bound and z + ORDER < bound
    assert threshold.verify(KEY, 2, AGGREGATE, partials, Proof(e, z + ORDER))
    above = z + -(-(bound - z) // ORDER) * ORDER  # the smallest such response at or above the bound
    assert bound <= above < 2 * bound
    assert not threshold.verify(KEY, 2, AGGREGATE, partials, Proof(e, above))
    assert not threshold.verify(KEY, 2, AGGREGATE, partials, Proof(e, z - ORDER * (z // ORDER + 1)))  # < 0


def test_a_partial_must_be_reduced_and_in_z_star():
    """p + n^2 is the same residue as p: a proof made over it holds, the range check refuses it."""
    item = proven(1)
    partials = list(item.partials)
    unreduced = [partials[0] + N2, partials[1]]
    proof = threshold.prove(SHARES[0], KEY, AGGREGATE, unreduced)
    assert threshold.verify(KEY, 1, AGGREGATE, partials, item.proof)
    assert not threshold.verify(KEY, 1, AGGREGATE, unreduced, proof)
    assert not threshold.verify(KEY, 1, AGGREGATE, unreduced, item.proof)
    assert not threshold.verify(KEY, 1, AGGREGATE, [0, partials[1]], item.proof)


def test_the_partial_of_the_ciphertext_one_is_one_and_verifies():
    item = proven(3, [1, AGGREGATE[0]])
    assert item.partials[0] == 1
    assert threshold.verify(KEY, 3, [1, AGGREGATE[0]], list(item.partials), item.proof)


def test_the_proof_randomness_is_r_bits_uniform():
    """r = z - e Delta s_i is drawn from [0, 2^R), R = response_bits - 1: 40 proofs all stay below
    2^R and at least one reaches bit R - 1 (all missing it has probability 2^-40)."""
    share, r_bits = SHARES[0], KEY.response_bits - 1
    rs = []
    for _ in range(40):
        proof = threshold.prove(share, KEY, AGGREGATE[:1], PARTIALS[1][:1])
        rs.append(proof.response - proof.challenge * KEY.delta * share.value)
    assert all(0 <= r < 1 << r_bits for r in rs)
    assert max(r.bit_length() for r in rs) == r_bits


def test_lagrange_coefficients_of_three_holders():
    assert [threshold.lagrange([1, 2, 3], i, 6) for i in (1, 2, 3)] == [18, -18, 6]
    assert [threshold.lagrange([2, 3], i, 6) for i in (2, 3)] == [18, -12]
    assert all(type(threshold.lagrange([1, 3], i, 6)) is int for i in (1, 3))


def test_a_lagrange_coefficient_that_is_not_an_integer_is_an_error():
    """Delta = 1 does not clear 3 / (3 - 1)."""
    with pytest.raises(ArithmeticError, match="not an integer"):
        threshold.lagrange([1, 3], 1, 1)


def test_combine_uses_the_first_t_shares_in_order():
    garbage = [AGGREGATE[1], AGGREGATE[0]]
    assert threshold.combine(KEY, {3: garbage, 2: PARTIALS[2], 1: PARTIALS[1]}) == SUMS
    assert threshold.combine(KEY, {3: PARTIALS[3], 2: PARTIALS[2]}) == SUMS


def test_combine_refuses_fewer_than_t_partials():
    with pytest.raises(ValueError, match="^1 partial decryptions; 2 are needed$"):
        threshold.combine(KEY, {2: PARTIALS[2]})


def test_a_verification_key_without_an_inverse_verifies_nothing_and_raises_nothing():
    """Only a hand-made key can hold one (the manifest's elements are checked): verify says False."""
    item = proven(1)
    key = ThresholdKey(KEY.n, KEY.threshold, KEY.v, (PRIME_P * 7, *KEY.verification_keys[1:]))
    assert not threshold.verify(key, 1, AGGREGATE, list(item.partials), item.proof)
