"""The graph's squash (trainer.calibration.onnx_squash) against the reference `squash`, through
ONNX Runtime: six nodes instead of seven must not move a score beyond float rounding."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from trainer.calibration import onnx_squash, squash
from trainer.graph import GraphBuilder, float_input

KNEE = math.log(9.0)


def _session(build) -> ort.InferenceSession:
    g = GraphBuilder()
    g.rename(build(g, "z"), "score")
    model = g.model(
        [float_input("z", ["batch"], TensorProto.DOUBLE)],
        [float_input("score", ["batch"], TensorProto.DOUBLE)],
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def graph() -> ort.InferenceSession:
    return _session(onnx_squash)


def _run(session: ort.InferenceSession, z: np.ndarray) -> np.ndarray:
    return session.run(None, {"z": np.asarray(z, dtype=np.float64)})[0]


def test_up_to_0_9_the_score_is_the_sigmoid_node_bit_for_bit(graph):
    sigmoid = _session(lambda g, z: g.op("Sigmoid", z))
    z = np.r_[np.linspace(-800.0, KNEE, 100_001), np.nextafter(KNEE, 0.0), KNEE]
    np.testing.assert_array_equal(_run(graph, z), _run(sigmoid, z))


def test_the_score_is_squash_within_float_rounding_everywhere(graph):
    z = np.r_[
        np.linspace(-800.0, 800.0, 200_001),
        np.linspace(KNEE - 1e-6, KNEE + 1e-6, 10_001),
        np.geomspace(1.0, 1e15, 100_001),
    ]
    with np.errstate(over="ignore"):
        want = squash(z)
    np.testing.assert_allclose(_run(graph, z), want, rtol=0, atol=2.3e-16)


def test_beyond_0_9_scores_keep_the_order_of_their_logits(graph):
    z = np.geomspace(KNEE, 1e12, 2_000)  # each 1.4 % past the one before
    got = _run(graph, z)
    assert (np.diff(got) > 0).all()
    assert got[-1] < 1.0


def test_infinite_and_missing_logits_map_as_in_the_reference(graph):
    got = _run(graph, [np.inf, -np.inf, np.nan])
    assert got[0] == 1.0 and got[1] == 0.0 and np.isnan(got[2])
