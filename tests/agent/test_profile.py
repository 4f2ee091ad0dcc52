"""The daily profile (#15): a reading far from its sensor's usual level at this hour scores;
wild readings and clocks teach it nothing; its state stays bounded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from agent.model.profile import HOURS, MAX_SENSORS, Profile, ProfileParams, hour_of

PARAMS = {
    "mean": [0.0],
    "spread": [1.0],
    "median": 1.0,
    "scale": 2.0,
    "baseline_mean": -1.5,
    "baseline_std": 0.5,
    "baseline_weight": 100,
}


def _profile(**update: object) -> Profile:
    params = ProfileParams(**{**PARAMS, **update})
    return Profile(params, len(params.mean))


def _day(hour: int) -> float:
    """A level that follows the clock: 3 from 12:00 to 17:59, -1 otherwise."""
    return 3.0 if 12 <= hour < 18 else -1.0


def test_hour_of_reads_utc_hours_and_refuses_what_is_not_a_time():
    assert hour_of(0.0) == 0
    assert hour_of(1_704_067_200.0 + 13 * 3600 + 59 * 60) == 13  # 2024-01-01 13:59 UTC
    assert hour_of(-1.0) == 23  # before 1970 still has hours
    assert [hour_of(t) for t in (math.nan, math.inf, -math.inf)] == [-1, -1, -1]


def test_a_reading_ordinary_overall_but_not_at_this_hour_stands_out():
    """After a month each hour knows its level: the noon level at midnight is far off,
    the same value at noon is not."""
    profile = _profile(mean=[0.0], spread=[2.0])
    state = profile.new_state()
    for _day_number in range(30):
        for hour in range(HOURS):
            profile.statistic(state, hour, [_day(hour)])
    at_noon = profile.statistic(list(state), 13, [3.0])
    at_midnight = profile.statistic(list(state), 0, [3.0])
    assert at_noon < 0.5 < 10.0 < at_midnight


def test_an_hour_with_few_readings_leans_on_the_training_level():
    profile = _profile(mean=[10.0], spread=[1.0])
    # Nothing learnt yet: the distance from the training mean in training spreads, squared.
    assert profile.statistic(profile.new_state(), 5, [12.0]) == pytest.approx(4.0 / 1.001)


def test_the_logit_is_linear_in_the_statistic_and_clipped():
    profile = _profile()
    assert profile.logit(1.0) == -2.0  # the median
    assert profile.logit(3.0) == -1.0  # one scale above it
    assert profile.logit(1e9) == 16.0 and profile.logit(-1e9) == -16.0


@pytest.mark.parametrize("wild", [math.nan, math.inf, -math.inf, 1e308])
def test_a_wild_reading_scores_highest_and_teaches_nothing(wild):
    profile = _profile(mean=[0.0, 0.0], spread=[1.0, 1.0])
    state = profile.new_state()
    before = list(state)
    assert profile.statistic(state, 3, [wild, wild]) == math.inf
    assert state == before


def test_a_reading_without_a_time_is_not_scored_and_teaches_nothing():
    profile = _profile()
    state = profile.new_state()
    before = list(state)
    assert profile.statistic(state, -1, [100.0]) == 0.0
    assert state == before


def test_a_huge_step_moves_the_hour_by_at_most_ten_training_spreads():
    profile = _profile(spread=[1.0])
    state = profile.new_state()
    profile.statistic(state, 7, [0.0])
    profile.statistic(state, 7, [1e30])  # count 2: weight 1/2, the step clipped to 10
    assert state[HOURS + 7] == pytest.approx(5.0)


def test_a_constant_hour_keeps_a_positive_variance_and_a_valid_state():
    profile = _profile()
    state = profile.new_state()
    for _ in range(20_000):  # (1 - rate)^n reaches float64's floor without the variance floor
        profile.statistic(state, 2, [0.5])
    assert state[HOURS + HOURS + 2] > 0
    assert math.isfinite(profile.statistic(state, 2, [0.5]))
    assert profile.valid_state(np.asarray(state))


def test_the_state_stays_the_same_size_and_a_damaged_one_is_refused():
    profile = _profile(mean=[0.0, 1.0], spread=[1.0, 2.0])
    state = profile.new_state()
    rng = np.random.default_rng(3)
    for t in range(3000):
        profile.statistic(state, t % HOURS, rng.normal(0, 3, 2).tolist())
    assert len(state) == profile.state_size == HOURS * (1 + 2 * 2)
    good = np.asarray(state)
    assert profile.valid_state(good)
    for index, value in [(0, 1.5), (0, -1.0), (HOURS + 2 * HOURS, 0.0), (-1, -1.0), (-1, 1e9)]:
        bad = good.copy()
        bad[index] = value
        assert not profile.valid_state(bad), (index, value)
    assert not profile.valid_state(good[:-1])


@pytest.mark.parametrize(
    "bad",
    [
        {"mean": [0.0, 1.0]},
        {"spread": [0.0]},
        {"spread": [math.inf]},
        {"mean": [math.nan]},
        {"scale": 0.0},
        {"rate": 0.0},
        {"baseline_mean": 17.0},
        {"mean": [0.0] * (MAX_SENSORS + 1), "spread": [1.0] * (MAX_SENSORS + 1)},
        {"extra": 1},
    ],
)
def test_a_manifest_with_a_bad_profile_is_refused(bad):
    with pytest.raises(ValidationError):
        ProfileParams(**{**PARAMS, **bad})


def test_a_profile_for_other_sensors_is_refused_by_the_layer():
    with pytest.raises(ValueError, match="profile of 1 sensors, the model has 2"):
        Profile(ProfileParams(**PARAMS), 2)


# -- where the times come from: a file's time column (the trainer's and the API's: tests/trainer)


def _csv(tmp_path, name: str, header: str, stamps: list[str]) -> object:
    from agent.model.table import read_table

    path = tmp_path / name
    rows = [f"{s},{i % 7}" for i, s in enumerate(stamps)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return read_table(path)


def test_a_files_times_are_read_as_utc_epoch_seconds(tmp_path):
    table = _csv(
        tmp_path,
        "t.csv",
        "timestamp,v",
        ["2024-01-01 00:00:00", "2024-01-01T01:00:00Z", "2024-01-01T03:00:00+01:00"],
    )
    np.testing.assert_array_equal(table.times(), 1_704_067_200.0 + np.array([0, 3600, 7200]))
    numbers = _csv(tmp_path, "n.csv", "ts,v", ["1704067200", "1704067200500"])
    np.testing.assert_array_equal(numbers.times(), [1_704_067_200.0, 1_704_067_200.5])


@pytest.mark.parametrize(
    ("header", "stamps"),
    [("v,w", ["1", "2"]), ("ts,v", ["2024-01-01T00:00:00", "soon"]), ("ts,v", ["nan", "1"])],
    ids=["no time column", "a cell that is not a time", "not a number"],
)
def test_a_file_without_usable_times_has_none(tmp_path, header, stamps, caplog):
    assert _csv(tmp_path, "x.csv", header, stamps).times() is None
    if header.startswith("ts"):  # a time column with a bad cell is named, not silently dropped
        row, bad = next((i + 2, s) for i, s in enumerate(stamps) if s in ("soon", "nan"))
        assert f"row {row}: {bad!r} is not a time" in caplog.text, caplog.text
        assert "no daily profile" in caplog.text
