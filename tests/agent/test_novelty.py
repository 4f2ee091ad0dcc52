"""Range novelty (#15): a reading past every value its sensor has shown scores, once, and a
wild one cannot blind the sensor for good."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from agent.model.novelty import Novelty, NoveltyParams
from agent.model.stream import StreamParams

RANGE = {"low": [0.0, -1.0], "high": [10.0, 1.0]}


def _novelty(window: int = 1, **update: object) -> Novelty:
    params = NoveltyParams(**{"tolerance": 0.3, "memory": 5, **RANGE, **update})
    return Novelty(params, 2, window)


def _run(novelty: Novelty, readings: list[list[float]]) -> tuple[list[float], list[float]]:
    state = novelty.new_state()
    return [novelty.step(state, r) for r in readings], state


def test_a_spike_scores_while_a_window_holds_it_then_stops():
    # 10 + 0.3 x 10 is the edge; 15 is 0.5 ranges past: 1 - exp(-(0.5 - 0.3) / 0.3) / 2.
    scores, _ = _run(_novelty(window=3), [[5.0, 0.0]] * 3 + [[15.0, 0.0]] + [[5.0, 0.0]] * 8)
    want = 1.0 - 0.5 * math.exp(-(0.5 - 0.3) / 0.3)
    assert scores[:3] == [0.0] * 3
    assert scores[3:6] == pytest.approx([want] * 3)
    assert scores[6:] == [0.0] * 6


def test_an_excursion_holds_while_its_sensor_stays_out_then_ends_a_window_after_its_back():
    """A fault that keeps its sensor out of the range it had (plus the tolerance) keeps the
    score for as long as it lasts, a reading back now and then included; once a whole window
    of readings is back the hold ends."""
    out, back = [20.0, 0.0], [12.0, 0.0]  # 12 is within 10 + 0.3 x 10 of the range it had
    readings = [[5.0, 0.0]] * 3 + [out] * 4 + [back] + [out] * 3 + [back] * 5
    scores, state = _run(_novelty(window=2, memory=100), readings)
    assert scores[:3] == [0.0] * 3 and min(scores[3:12]) > 0.5  # the back at 7 is one reading
    assert scores[12:] == [0.0] * 4  # the second reading back (a window of 2) ends the hold
    assert state[:6] == [0.0, 0.0, -1.0, 0.0, 0.0, 0.0]


def test_a_level_that_stays_new_goes_quiet_after_memory_windows():
    scores, _ = _run(_novelty(window=1, memory=5), [[5.0, 0.0]] + [[20.0, 0.0]] * 10)
    assert min(scores[1:6]) > 0.5 and scores[6:] == [0.0] * 5


def test_the_hold_is_measured_on_the_sensor_that_opened_it():
    # sensor 1 opens the hold; sensor 0 never leaves its range: the hold lasts while 1 is out
    readings = [[5.0, 3.0]] * 4 + [[5.0, 0.0]] * 2
    scores, _ = _run(_novelty(window=1, memory=100), readings)
    assert min(scores[:4]) > 0.5 and scores[4:] == [0.0, 0.0]


def test_within_the_tolerance_nothing_scores_but_the_range_widens():
    novelty = _novelty()
    scores, state = _run(novelty, [[12.0, 0.0], [14.9, 0.0], [18.0, 0.0]])
    # 12 is 0.2 ranges past 10; 14.9 is 0.24 past 12; 18 is 0.24 past 14.9: never novel
    assert scores == [0.0, 0.0, 0.0]
    assert state[-2] == 18.0  # the first sensor's high


def test_a_level_seen_once_is_not_novel_again():
    scores, _ = _run(_novelty(memory=1), [[20.0, 0.0], [5.0, 0.0], [20.0, 0.0]])
    assert scores[0] > 0.5 and scores[1:] == [0.0, 0.0]


def test_a_slow_drift_never_scores():
    ramp = [[5.0 + 0.05 * i, 0.0] for i in range(2000)]
    scores, _ = _run(_novelty(), ramp)
    assert max(scores) == 0.0


def test_either_side_and_any_sensor_scores():
    novelty = _novelty(memory=1)
    assert _run(novelty, [[-5.0, 0.0]])[0][0] > 0.5
    assert _run(novelty, [[5.0, 1.9]])[0][0] > 0.5


def test_a_larger_novel_reading_while_held_raises_the_held_score():
    readings = [[14.0, 0.0], [5.0, 0.0], [40.0, 0.0], [5.0, 0.0]]
    scores, _ = _run(_novelty(window=3), readings)
    assert scores[0] == scores[1] < scores[2] == scores[3]


def test_a_wild_reading_cannot_blind_the_sensor():
    """A broken sensor's (or a hostile publisher's) 1e30 widens the range by at most 10
    training ranges: a real excursion past that is still novel. Without the bound the range
    reached 1e30 and nothing on that sensor was novel again."""
    novelty = _novelty(memory=1)
    state = novelty.new_state()
    assert novelty.step(state, [1e30, 0.0]) > 0.99
    assert state[-2] == 10.0 + 10 * 10.0
    assert novelty.step(state, [5.0, 0.0]) == 0.0
    assert novelty.step(state, [150.0, 0.0]) > 0.5


def test_readings_that_are_not_numbers_score_highest_and_teach_nothing():
    novelty = _novelty(memory=1)
    for wild in (math.nan, math.inf, -math.inf):
        scores, state = _run(novelty, [[wild, 0.0]])
        assert scores == [1.0]
        assert state[6:] == [0.0, -1.0, 10.0, 1.0]


def test_a_sensor_constant_in_training_scores_its_first_real_move():
    """A stuck valve during normal operation: leaving that value is the anomaly."""
    novelty = Novelty(NoveltyParams(low=[0.7], high=[0.7], memory=1), 1)
    scores, _ = _run(novelty, [[0.7], [0.7], [0.71]])
    assert scores[:2] == [0.0, 0.0] and scores[2] > 0.99


@pytest.mark.parametrize(
    "bad",
    [
        {"low": [0.0], "high": [1.0, 2.0]},
        {"low": [3.0, 0.0], "high": [1.0, 2.0]},
        {"low": [math.nan, 0.0]},
        {"high": [math.inf, 1.0]},
        {"high": [1e31, 1.0]},
        {"low": [], "high": []},
        {"tolerance": 0.0},
        {"memory": 0},
        {"extra": 1},
    ],
)
def test_a_manifest_with_bad_ranges_is_refused(bad):
    with pytest.raises(ValidationError):
        NoveltyParams(**{"tolerance": 0.3, "memory": 5, **RANGE, **bad})


def test_ranges_for_other_sensors_are_refused_by_the_layer():
    with pytest.raises(ValueError, match="novelty ranges for 2 sensors, the model has 3"):
        Novelty(NoveltyParams(**RANGE), 3)


def test_novelty_needs_a_layer_to_ride_on():
    with pytest.raises(ValidationError, match="novelty"):
        StreamParams(method="none", novelty=NoveltyParams(**RANGE))


def test_the_state_stays_the_same_size():
    novelty = _novelty()
    rng = np.random.default_rng(1)
    _, state = _run(novelty, (rng.normal(0, 100, (3000, 2))).tolist())
    assert len(state) == novelty.state_size == 6 + 2 * 2
    good = np.asarray(state)
    assert novelty.valid_state(good)
    # a score past 1, an age past memory, no such sensor, the way back's low above its high,
    # a run back longer than a window
    damaged = {0: 1.5, 1: 5.5, 2: 2.0, 3: 1e300, 5: 2.0}
    for index, value in damaged.items():
        bad = good.copy()
        bad[index] = value
        assert not novelty.valid_state(bad), (index, value)


def test_a_sensor_constant_in_training_takes_a_new_level_in_within_a_few_readings():
    """A setpoint constant at 20 in training, moved to 21 for good: novel at once, taken in
    within a few readings, and the hold ends after `memory` windows. With growth counted in
    float32 steps of 20 (2.4e-6) it took some 32,000 readings, each of them novel."""
    novelty = Novelty(NoveltyParams(low=[20.0], high=[20.0], memory=50), 1, 5)
    state = novelty.new_state()
    scores = [novelty.step(state, [21.0]) for _ in range(200)]
    assert scores[0] > 0.99
    assert state[-1] == 21.0  # its high, 10 x 0.02 a reading: five readings
    assert max(scores[55:]) == 0.0


def test_a_hold_longer_than_memory_while_a_window_holds_the_reading_is_a_state_that_loads():
    """A model's window longer than `memory`: the hold lasts while a window holds the novel
    reading, past `memory` windows. Such a state was refused on load (its age past memory), so
    after a restart the asset's layer started afresh, as if its saved state were damaged."""
    novelty = _novelty(window=8, memory=3)
    scores, state = _run(novelty, [[5.0, 0.0]] + [[15.0, 0.0]] + [[5.0, 0.0]] * 5)
    assert min(scores[1:]) > 0.5 and state[1] == 5.0, "held for 5 windows, past memory"
    assert novelty.valid_state(np.asarray(state))
    held = [novelty.step(state, [5.0, 0.0]) for _ in range(3)]
    assert held[:2] == [scores[-1]] * 2 and held[2] == 0.0, (
        "ends when the window no longer holds it"
    )
    assert novelty.valid_state(np.asarray(state))


@pytest.mark.parametrize("reading", [[5.0], [5.0, 0.0, 1.0], []])
def test_a_reading_of_another_sensor_count_is_refused_by_name(reading):
    """The common case is checked without the per-sensor loop that used to refuse it."""
    novelty = _novelty()
    state = novelty.new_state()
    with pytest.raises(ValueError, match=f"a reading of {len(reading)} values for 2 sensors"):
        novelty.step(state, reading)
    assert state == novelty.new_state(), "nothing learnt"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_batch_checked_at_once_scores_and_learns_as_each_reading_checked_alone(dtype):
    """A batch's readings found within the ranges as they stood before it (`within`, in numpy)
    go through `quiet`; the rest through `step`. As ranges only widen, that must be exactly
    `step` for each: readings at the edges and a float32 step past them, -0.0, NaN, ±inf,
    the largest floats, spikes that widen a range mid-batch and holds that open and end."""
    # 0.3 is no float32: float32(0.3) is past it, though a float32 range would hold it.
    novelty = _novelty(window=3, high=[10.0, 0.3])
    rng = np.random.default_rng(4)
    rows = np.column_stack([rng.uniform(0.0, 10.0, 600), rng.uniform(-1.0, 0.3, 600)])
    edges = [0.0, 10.0, -0.0, np.nextafter(10.0, 11.0), np.nextafter(0.0, -1.0), 1e-45]
    wild = [np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 15.0, -4.0, 25.0]
    for value in edges + wild:
        rows[rng.integers(10, 600, 4), rng.integers(0, 2, 4)] = value
    rows[5, 1] = float(np.float32(0.3))  # before anything widens that range
    rows[300:330, 0] = 12.0  # an excursion held for a while, then back
    with np.errstate(over="ignore"):
        newest = rows.astype(dtype)
    alone, together = novelty.new_state(), novelty.new_state()
    want = [novelty.step(alone, reading) for reading in newest.tolist()]
    got = []
    for start in range(0, len(newest), 40):
        batch = newest[start : start + 40]
        checks = novelty.within(together, batch)
        for ok, reading in zip(checks, batch.tolist(), strict=True):
            got.append((novelty.quiet if ok else novelty.step)(together, reading))
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
    assert together == alone
    assert 0 < sum(s > 0 for s in want) < len(want) / 4  # holds happened, not everywhere
