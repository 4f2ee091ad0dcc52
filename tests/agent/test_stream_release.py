"""Attacks on the tail gate's release (`tail_climb`, #15): streams that keep an episode open,
bursts that would have the release throw away what they taught, repeated long faults."""

from __future__ import annotations

import numpy as np
import pytest

from tests.agent.test_stream import RELEASE, SENSORS, WINDOW, _likelihood, _scores

# The layer's spread on a quiet stream of ±0.5 logits with the spread floor of 1.
SPREAD = float(np.sqrt(0.5**2 + 1.0))


def _run(climb: int, logits: np.ndarray, **update: object) -> np.ndarray:
    """Onsets of the released gate's layer (or the kept one's at climb 0) over `logits`."""
    layer = _likelihood(**RELEASE, tail_climb=climb, **update)
    out = layer.step(layer.new_state(), _scores(logits), np.zeros((len(logits), WINDOW, SENSORS)))
    above = out >= 0.5
    return np.flatnonzero(above[1:] & ~above[:-1]) + 1


@pytest.mark.parametrize(("climb", "seen"), [(0, False), (30, True)])
def test_a_fault_after_a_persisting_shift_is_released_at_the_new_normal(climb, seen):
    """A setpoint change (+4 logits, for good) alerts once and its episode never comes back
    within `alert_z` of the mean before it. A fault that saturates for 300 windows at the new
    level and ends must still be released: the episode kept open by the shift noted the old
    mean, so the gate kept all the fault climbed and a fault 3.5 spreads out 2,700 windows
    later went unseen, as with no release at all."""
    logits = np.random.default_rng(3).normal(-6.0, 0.5, 13100)
    logits[1000:] += 4.0  # below a score of 0.9, where the layer's logit is the plain one
    logits[10000:10300] += 30.0
    logits[13000:13040] += 3.5 * SPREAD
    onsets = _run(climb, logits, baseline_mean=-6.0)
    assert any(1000 <= t < 1030 for t in onsets), f"the shift alerts: {onsets}"
    assert any(10000 <= t < 10030 for t in onsets), f"the fault alerts: {onsets}"
    assert any(13000 <= t < 13040 for t in onsets) == seen, onsets
