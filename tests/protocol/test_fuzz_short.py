"""A short run of the decoder fuzzer (benchmarks/fuzz_decoders.py): 2,000 inputs from a fixed seed, in-process.

The full campaign is `.venv/bin/python benchmarks/fuzz_decoders.py --inputs 100000 --seed 1`.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from collections import Counter

import pytest

PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_decoders.py"
INPUTS, SEED = 2000, 1


def _load():
    spec = importlib.util.spec_from_file_location("fuzz_decoders", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return _load().run(INPUTS, SEED, max_seconds=120)


def test_the_mutations_reach_every_decoder_and_its_deep_rules(report):
    assert report.inputs == INPUTS
    assert len(report.outcomes) == 16
    for name, outcomes in report.outcomes.items():  # each entry point both accepts and refuses mutated input
        assert outcomes["accepted"] > 0 and outcomes.total() > outcomes["accepted"], (name, outcomes)
    labels = sum(report.outcomes.values(), Counter())
    reasons = {label.split("/")[0] for label in labels} - {"accepted", "CRASH", "ValueError", "OSError"}
    assert len(reasons) >= 15, reasons
    # past the signature (re-signed mutations) into the body, certificate and block rules
    assert {"bad_signature", "bad_body", "bad_cert", "wrong_task", "bad_shape", "bad_genesis"} <= reasons
    assert {"bad_merkle_root", "too_many_updates", "bad_update"} <= reasons, reasons
    assert reasons & {"non_finite", "out_of_range", "bad_sample_count"}
    assert reasons & {"insufficient_work", "bad_model_hash", "duplicate_device", "stale_base", "bad_height"}
    assert report.outcomes["validate_block"]["accepted"] > 0  # re-mined blocks with mutated updates pass


def test_no_crash_hang_or_blow_up(report):
    assert not report.findings, report.summary()
