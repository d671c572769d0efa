"""Edges of Paillier encryption (privacy/paillier.py) on the vector's real key: masks are uniform
n-th residues, encryption decrypts with the primes, the homomorphic sum of zero, one and several
updates, and the background mask pool (fills to its target and no further, refills, idles at
niceness 15 in a named daemon thread, stops on close)."""

import contextlib
import math
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest
from paillier_vector_key import N2, PACKING, PRIME_P, PRIME_Q, N

from edge_sdk.privacy import paillier

LAMBDA = math.lcm(PRIME_P - 1, PRIME_Q - 1)


def decrypt(c: int) -> int:
    """Textbook Paillier decryption with g = n + 1: m = L(c^lambda mod n^2) / lambda mod n."""
    return (pow(c, LAMBDA, N2) - 1) // N * pow(LAMBDA, -1, N) % N


def is_mask(x: int) -> bool:
    """An n-th residue of Z*_{n^2}: its lambda-th power is 1."""
    return 0 < x < N2 and math.gcd(x, N) == 1 and pow(x, LAMBDA, N2) == 1


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


SMALL_N = 15  # 8 units: every mask r^15 mod 225 is distinct
UNIT_MASKS = {pow(r, SMALL_N, SMALL_N**2) for r in range(1, SMALL_N) if math.gcd(r, SMALL_N) == 1}


def test_masks_are_uniform_over_the_n_th_powers_of_every_unit():
    """4000 draws over 8 equally likely masks: each count is 500 +- 21; 350..650 is over 7 sigma."""
    counts = {}
    for _ in range(4000):
        mask = paillier.new_mask(SMALL_N)
        counts[mask] = counts.get(mask, 0) + 1
    assert set(counts) == UNIT_MASKS and len(UNIT_MASKS) == 8
    assert all(350 <= c <= 650 for c in counts.values()), counts


def test_a_mask_of_the_real_key_is_an_n_th_residue():
    assert all(is_mask(paillier.new_mask(N)) for _ in range(5))


def test_encryption_without_a_pool_decrypts_and_is_randomized():
    plaintexts = [0, 1, 123456789, N - 1]
    first, second = paillier.encrypt(plaintexts, N), paillier.encrypt(plaintexts, N)
    assert [decrypt(c) for c in first] == plaintexts == [decrypt(c) for c in second]
    assert all(a != b for a, b in zip(first, second, strict=True))


def test_the_homomorphic_sum_of_three_updates_decrypts_to_the_sum():
    updates = [paillier.encrypt([i, 10 * i], N) for i in (1, 2, 4)]
    total = paillier.aggregate(updates, PACKING)
    assert [decrypt(c) for c in total] == [7, 70] and all(0 < c < N2 for c in total)


def test_the_sum_of_one_update_is_that_update_and_of_none_is_empty():
    one = paillier.encrypt([5, 6], N)
    assert paillier.aggregate([one], PACKING) == one
    assert paillier.aggregate([], PACKING) == []


def test_updates_of_different_lengths_do_not_sum():
    with pytest.raises(ValueError):
        paillier.aggregate([paillier.encrypt([1, 2], N), paillier.encrypt([3], N)], PACKING)


def pool_threads(before: set) -> list:
    return [t for t in threading.enumerate() if t not in before]


@contextlib.contextmanager
def running(target: int):
    """A mask pool of the real key, closed however the test ends; yields (pool, its thread)."""
    before = set(threading.enumerate())
    pool = paillier.MaskPool(N, target)
    try:
        (thread,) = pool_threads(before)
        yield pool, thread
    finally:
        pool.close()


def test_a_pool_fills_to_its_target_and_no_further():
    with running(4) as (pool, _):
        assert wait_for(lambda: pool.ready() >= 4)
        time.sleep(0.2)  # a pool that overfills would have computed many more by now
        assert pool.ready() == 4


def test_taking_a_mask_uses_one_from_the_pool():
    with running(3) as (pool, thread):
        assert wait_for(lambda: pool.ready() == 3)
        pool.close()  # stop refilling: what take() consumes shows
        thread.join(5.0)
        cts = paillier.encrypt([42, 43], N, pool)
        assert pool.ready() == 1 and [decrypt(c) for c in cts] == [42, 43]


def test_the_pool_refills_what_is_taken():
    with running(3) as (pool, _):
        assert wait_for(lambda: pool.ready() == 3)
        assert is_mask(pool.take())
        assert wait_for(lambda: pool.ready() == 3)


def test_an_empty_pool_computes_a_mask_on_the_spot():
    with running(0) as (pool, _):
        masks = [pool.take() for _ in range(3)]
        assert all(is_mask(m) for m in masks) and len(set(masks)) == 3 and pool.ready() == 0


def test_the_pool_thread_is_a_daemon_named_paillier_masks_at_niceness_15_that_stops_on_close():
    with running(2) as (pool, thread):
        assert thread.name == "paillier-masks" and thread.daemon
        assert wait_for(lambda: pool.ready() >= 1)  # the priority is set before the first mask
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == 15
    thread.join(5.0)
    assert not thread.is_alive()


CHILD = """
import os, sys, time
from edge_sdk.privacy import paillier
os.nice(19 - os.nice(0))
paillier.new_mask(15)  # load whatever the first call loads while every file is still readable
if os.geteuid() == 0:  # drop the right to raise priority, as an ordinary device user
    os.setgid(65534)
    os.setuid(65534)
pool = paillier.MaskPool(int(sys.argv[1]), 2)
deadline = time.monotonic() + 10
while pool.ready() < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
thread = next(t for t in __import__("threading").enumerate() if t.name == "paillier-masks")
print(pool.ready(), os.getpriority(os.PRIO_PROCESS, thread.native_id))
"""


def test_a_pool_in_a_process_already_at_niceness_19_keeps_filling():
    """An unprivileged process at nice 19 may not go back to 15: the refusal is ignored, not fatal.
    (The same pool in this process fills too, which also ties this test to the pool's code.)"""
    with running(2) as (local, _):
        assert wait_for(lambda: local.ready() == 2)
    source = pathlib.Path(paillier.__file__).resolve().parents[2]  # the edge_sdk this test imported
    env = {**os.environ, "PYTHONPATH": str(source)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(N)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "19"]
