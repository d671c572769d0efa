"""An update's delta: exactly the model's parameters, each float32 of its shape, finite and within
2^delta_bits; each broken rule refused with its reason and a detail naming the parameter."""

import dataclasses

import numpy as np
import pytest
from test_update_parse_edges import refusal, resigned

from edge_sdk.protocol import codec
from edge_sdk.protocol.block import Update
from edge_sdk.protocol.cert import issue_certificate
from edge_sdk.protocol.errors import Reason


def wire_delta(fed, **items) -> dict:
    delta = {name: codec.encode_array(v) for name, v in fed.delta(0).items()}
    return {**delta, **items}


def test_a_delta_just_inside_the_range_is_accepted(fed):
    limit = float(1 << fed.task.chain.delta_bits)
    edge = np.nextafter(np.float32(limit), np.float32(0))
    delta = {**fed.delta(0), "b": np.array([edge, -edge, 0], np.float32)}
    assert Update.parse(fed.update(0, bytes(32), delta=delta), fed.task).delta["b"][0] == edge


@pytest.mark.parametrize("value", [64.0, -64.0, 1e30])
def test_a_delta_at_or_past_the_range_is_out_of_range(fed, value):
    delta = {**fed.delta(0), "b": np.array([0, value, 0], np.float32)}
    err = refusal(fed.update(0, bytes(32), delta=delta), fed.task)
    assert (err.reason, err.detail) == (Reason.OUT_OF_RANGE, "b: |delta| must be < 2^6")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_delta_is_refused(fed, value):
    delta = {**fed.delta(0), "W": np.full((6, 3), value, np.float32)}
    err = refusal(fed.update(0, bytes(32), delta=delta), fed.task)
    assert (err.reason, err.detail) == (Reason.NON_FINITE, "W has NaN or infinity")


@pytest.mark.parametrize("case", ["missing", "extra", "text", "list"])
def test_a_delta_must_name_exactly_the_models_parameters(fed, case):
    full = wire_delta(fed)
    delta = {
        "missing": {"b": full["b"]},
        "extra": {**full, "c": full["b"]},
        "text": "delta",
        "list": [full["W"], full["b"]],
    }[case]
    err = refusal(resigned(fed, fed.update(0, bytes(32)), delta=delta), fed.task)
    assert (err.reason, err.detail) == (Reason.BAD_SHAPE, "delta must name exactly the model's parameters")


@pytest.mark.parametrize(
    "item",
    [
        codec.encode_array(np.zeros((6, 3), np.float64)),  # the right shape, not float32
        codec.encode_array(np.zeros((3, 6), np.float32)),  # the right size, another shape
        codec.encode_array(np.zeros((6, 3), np.float32).ravel()),
        {"shape": [6, 3], "data": bytes(72)},  # no dtype
        {"dtype": "f4", "data": bytes(72)},  # no shape
        "W",
    ],
    ids=["f8", "transposed", "flat", "no-dtype", "no-shape", "text"],
)
def test_each_parameter_must_be_float32_of_its_shape(fed, item):
    err = refusal(resigned(fed, fed.update(0, bytes(32)), delta=wire_delta(fed, W=item)), fed.task)
    assert (err.reason, err.detail) == (Reason.BAD_SHAPE, "W: expected f4[6, 3]")


def test_a_parameter_whose_data_does_not_fill_its_shape_is_bad_shape(fed):
    short = {"dtype": "f4", "shape": [6, 3], "data": bytes(68)}
    err = refusal(resigned(fed, fed.update(0, bytes(32)), delta=wire_delta(fed, W=short)), fed.task)
    assert (err.reason, err.detail) == (Reason.BAD_SHAPE, "W: data length does not match dtype and shape")


def test_a_task_with_an_empty_parameter_accepts_its_honest_updates(fed):
    """Found by mutation testing: decode_array bounds each dimension by the element count, which is
    0 for a (0, 3) parameter, so every update of such a task (genesis accepts it) was bad_shape."""
    initial = {"W": np.zeros((0, 3), np.int64), "b": np.zeros(3, np.int64)}
    fed.task = dataclasses.replace(fed.task, initial_model=initial)
    fed.certs[0] = issue_certificate(fed.coordinator, fed.task, fed.devices[0].public, quota=100, expires_ms=1 << 50)
    delta = {"W": np.zeros((0, 3), np.float32), "b": np.array([0.5, 0, -1], np.float32)}
    update = Update.parse(fed.update(0, bytes(32), samples=10, ts=5, delta=delta), fed.task)
    assert update.delta["W"].shape == (0, 3) and update.delta["b"].tolist() == [0.5, 0, -1]
