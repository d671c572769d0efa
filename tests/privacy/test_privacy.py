"""Packed Paillier and differential privacy."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe

from coordinator.emulator.accountant import epsilon, noise_for
from edge_sdk.chain.memory import MemoryChain
from edge_sdk.privacy import paillier
from edge_sdk.privacy.dp import clip_and_noise
from edge_sdk.privacy.sealed_share import open_share
from edge_sdk.protocol import packing as slots
from edge_sdk.protocol.errors import ProtocolError, Reason
from edge_sdk.protocol.identity import Identity

PUBLIC, PRIVATE = phe.generate_paillier_keypair(n_length=1024)


def packing(**kw):
    args = dict(n=PUBLIC.n, precision=12, clip_exp=0, max_quota=500, max_updates=8)
    args.update(kw)
    p = slots.Packing(**args)
    p.check()
    return p


SHAPES = {"b": (7,), "W": (5, 9)}
VALUES = 52


def decrypt_sums(ciphertexts, weight, pk):
    """The slot sums, decrypted with a plain (non-threshold) key: packing tests only."""
    sums = slots.checked_sums([PRIVATE.raw_decrypt(c) for c in ciphertexts], VALUES, weight, pk)
    assert sums is not None, "an honest aggregate broke its slots"
    return sums


@st.composite
def rounds(draw):
    k = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return [
        (int(rng.integers(1, 501)), {n: rng.uniform(-1.5, 1.5, s).astype(np.float32) for n, s in SHAPES.items()})
        for _ in range(k)
    ]


@given(rounds())
@settings(max_examples=25, deadline=None)
def test_decrypted_aggregate_is_the_exact_weighted_integer_sum(updates):
    pk = packing()
    cts = [[int.from_bytes(c, "big") for c in paillier.encrypt_update(d, n, SHAPES, pk)] for n, d in updates]
    total = sum(n for n, _ in updates)
    sums = decrypt_sums(paillier.aggregate(cts, pk), total, pk)
    quantized = [slots.quantize(slots.flatten(d, SHAPES), pk) for _, d in updates]
    exact = [sum(n * q[i] for (n, _), q in zip(updates, quantized, strict=True)) for i in range(VALUES)]
    assert sums == exact
    # and the fixed-point mean is the clipped float mean within one quantization step
    mean = np.array(slots.mean_fixed(sums, total, pk, 24), dtype=np.float64) / 2**24
    reference = sum(n * np.clip(slots.flatten(d, SHAPES), -1, 1) for n, d in updates) / total
    assert np.max(np.abs(mean - reference)) <= 2.0 / ((1 << pk.precision) - 1) + 2**-24


def test_the_largest_possible_round_cannot_overflow_a_slot():
    pk = packing()
    top = (1 << pk.precision) - 1
    worst = pk.max_updates * pk.max_quota * top  # every update at full quota, every value at the top
    assert worst < 1 << pk.slot_bits
    ones = {n: np.full(s, 1.0, np.float32) for n, s in SHAPES.items()}
    cts = [
        [int.from_bytes(c, "big") for c in paillier.encrypt_update(ones, pk.max_quota, SHAPES, pk)]
        for _ in range(pk.max_updates)
    ]
    sums = decrypt_sums(paillier.aggregate(cts, pk), pk.max_updates * pk.max_quota, pk)
    assert sums == [worst] * VALUES


def test_configurations_that_could_overflow_are_refused(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        packing(precision=32, max_quota=2**20, max_updates=2048, n=(1 << 40) + 1)
    with pytest.raises(ValueError, match="2\\^31"):
        packing(max_quota=2**20, max_updates=4096)
    from coordinator.task.setup import enroll_device, init_task

    init_task(
        tmp_path / "task",
        miners=[Identity.generate().public],
        privacy="paillier",
        paillier_bits=1024,
        max_quota=100,
        initial_hashes=20_000,
    )
    with pytest.raises(ValueError, match="max_quota"):
        enroll_device(
            tmp_path / "task",
            Identity.generate().public,
            broker_url="mqtt://127.0.0.1:1",
            out=tmp_path / "b",
            quota=101,
        )


def test_miners_check_ciphertext_count_and_range_without_the_key():
    pk = packing()
    good = paillier.encrypt_update({n: np.zeros(s, np.float32) for n, s in SHAPES.items()}, 1, SHAPES, pk)
    assert len(slots.parse_ciphertexts(good, VALUES, pk)) == pk.ciphertext_count(VALUES)
    cases = {
        Reason.BAD_SHAPE: good[:-1],
        Reason.OUT_OF_RANGE: [bytes(pk.ciphertext_bytes)] + good[1:],
    }
    for reason, value in cases.items():
        with pytest.raises(ProtocolError) as info:
            slots.parse_ciphertexts(value, VALUES, pk)
        assert info.value.reason is reason
    multiple_of_p = (int(PRIVATE.p) * 7).to_bytes(pk.ciphertext_bytes, "big")  # not in Z*_{n^2}
    with pytest.raises(ProtocolError):
        slots.parse_ciphertexts([multiple_of_p] + good[1:], VALUES, pk)


def test_precomputed_masks_give_valid_ciphertexts():
    pk = packing()
    pool = paillier.MaskPool(pk.n, 4)
    for _ in range(200):
        if pool.ready() >= 4:
            break
        __import__("time").sleep(0.02)
    assert pool.ready() == 4
    cts = paillier.encrypt([12345, 0, 1 << 100], pk.n, pool)
    pool.close()
    assert [PRIVATE.raw_decrypt(c) for c in cts] == [12345, 0, 1 << 100]
    assert len(set(cts)) == 3


def test_dp_clips_to_the_norm_and_adds_calibrated_noise():
    rng = np.random.default_rng(0)
    delta = {"a": np.full((100, 100), 0.5, np.float32), "b": np.ones(10, np.float32)}
    clipped = clip_and_noise(delta, clip=2.0, noise_multiplier=0.0, rng=rng)
    norm = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in clipped.values()))
    assert norm == pytest.approx(2.0, rel=1e-5)
    small = {"a": np.full(4, 0.1, np.float32)}
    assert np.allclose(
        clip_and_noise(small, clip=2.0, noise_multiplier=0.0, rng=rng)["a"], 0.1
    )  # below the clip: unchanged
    noisy = clip_and_noise({"a": np.zeros(200_000, np.float32)}, clip=2.0, noise_multiplier=0.5, rng=rng)["a"]
    assert np.std(noisy) == pytest.approx(1.0, rel=0.02)


def test_accountant_epsilon_grows_with_rounds_and_calibration_inverts_it():
    eps = [epsilon(1.0, r, 1e-5) for r in (1, 2, 5, 10)]
    assert eps == sorted(eps) and eps[0] > 0
    sigma = noise_for(4.0, 1e-5, 10)
    assert epsilon(sigma, 10, 1e-5) == pytest.approx(4.0, rel=1e-3)
    assert epsilon(0.0, 3, 1e-5) == math.inf


def emulate(out, privacy, extra=()):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "emulate",
            "--initial-hashes",  # the suite stays fast; calibration is tested on its own
            "20000",
            "--devices",
            "6",
            "--miners",
            "2",
            "--rounds",
            "3",
            "--seed",
            "4",
            "--max-wait-ms",
            "6000",
            "--privacy",
            privacy,
            *extra,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


def test_paillier_matches_plain_accuracy_and_no_device_holds_key_material(tmp_path):
    """With the conv net cnn:8x8: the encrypted aggregate of every parameter is exact, as in plain.
    Every round waits for all 6 devices (a later --max-wait-ms wins), so both runs average the same
    updates: a round that closed at 6 s without a slow device (seen under load) compared different sets."""
    everyone = ["--model", "cnn:8x8", "--max-wait-ms", "120000"]
    plain = emulate(tmp_path / "plain", "plain", everyone)
    enc = emulate(tmp_path / "paillier", "paillier", ["--paillier-bits", "1024", *everyone])
    assert enc["ok"] and enc["model_hash_agreement"]["ok"]
    # the third round of each: either run may record a fourth block (a miner can finish one more
    # before the emulator's stop reaches it), and that round's updates need not be everyone's
    assert [r["updates"] for r in plain["rounds"][:3]] == [r["updates"] for r in enc["rounds"][:3]] == [6, 6, 6]
    assert abs(enc["rounds"][2]["accuracy"] - plain["rounds"][2]["accuracy"]) <= 0.01
    assert enc["rounds"][2]["accuracy"] >= 0.85
    assert "device_encrypt_s" in enc["rounds"][-1]
    assert not any(r.get("overflow") for r in enc["rounds"])
    # the key exists only as shares, each sealed to its miner: open them as the miners would ...
    root = tmp_path / "paillier"
    task = MemoryChain((root / "task" / "genesis.block").read_bytes()).task
    shares = []
    for miner in sorted((root / "miners").iterdir()):
        me = Identity.load(miner / "identity")
        shares.append(open_share((miner / "paillier.share.sealed").read_bytes(), me.box_key, task, me.public.sign_pk))
    assert [s.index for s in shares] == [1, 2]
    # ... and no device file holds any of them, in any encoding, nor any sealed key file
    secrets = []
    for share in shares:
        secrets += [str(share.value).encode(), share.value.to_bytes((share.value.bit_length() + 7) // 8, "big")]
    for path in (root / "devices").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s in data for s in secrets), f"{path} holds a key share"
    assert not list((root / "devices").rglob("paillier*"))
    assert not any(s in p.read_bytes() for p in (root / "task").rglob("*") if p.is_file() for s in secrets)


def test_paillier_dp_reports_epsilon_per_round(tmp_path):
    report = emulate(
        tmp_path / "dp", "paillier+dp", ["--dp-epsilon", "20", "--dp-clip", "2.0", "--paillier-bits", "1024"]
    )
    eps = [r["epsilon"] for r in report["rounds"]]
    assert eps == sorted(eps) and eps[-1] == pytest.approx(20.0, rel=0.01)
    assert report["dp"]["noise_multiplier"] > 0


def test_an_overflowing_device_voids_its_rounds_on_every_node(tmp_path):
    """A real federation with one device whose ciphertexts fill every slot: every node opens the
    same aggregate, finds it out of bounds and keeps the model; the report names the rounds."""
    extra = ["--paillier-bits", "1024", "--attack", "overflow", "--attackers", "0.17", "--miners", "3"]
    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "emulate", "--initial-hashes", "20000", "--devices", "6",
         "--rounds", "2", "--seed", "4", "--max-wait-ms", "6000", "--privacy", "paillier", *extra,
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    attacked = json.loads((tmp_path / "o" / "attacked" / "report.json").read_text())
    clean = json.loads((tmp_path / "o" / "clean" / "report.json").read_text())
    assert attacked["model_hash_agreement"]["ok"] and all(v["ok"] for v in attacked["chain_verify"].values())
    assert not clean["overflowed_rounds"]
    named = attacked["overflowed_rounds"]
    assert named, "the attacker's rounds must be named"
    previous = attacked["initial"]["accuracy"]
    for r in attacked["rounds"]:
        if r["height"] in named:  # the model did not move at all: the same accuracy as before the round
            assert r["overflow"] and r["accuracy"] == previous
        previous = r["accuracy"]
    assert "Rounds whose aggregate broke its slots" in (tmp_path / "o" / "attacked" / "summary.md").read_text()
