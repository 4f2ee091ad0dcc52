"""Models trained with times get the stream's daily profile (agent/model/profile.py), from a
file's time column, `train_values` or the Python API; without times they have none."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainer import AnomalyDetector, stream_checks
from trainer.train import TrainOptions, train_values


def test_a_model_trained_with_times_has_a_profile_and_without_none():
    values = stream_checks.series("normal")[:1000]
    options = TrainOptions(algorithm="online", train_rows=1000)
    timed = train_values(values, ["v"], options, "t", times=stream_checks.times(1000))
    profile = timed.manifest.stream.profile
    assert profile is not None and profile.scale > 0 and profile.baseline_weight == 250
    assert train_values(values, ["v"], options, "t").manifest.stream.profile is None


def test_the_python_api_takes_times_as_numbers_or_datetimes():
    values = stream_checks.series("normal")[:1500]
    seconds = stream_checks.times(1500)
    stamps = pd.to_datetime(seconds, unit="s")
    detector = AnomalyDetector(algorithm="online", window=20).fit(
        values[:1000], times=seconds[:1000]
    )
    assert detector.manifest.stream.profile is not None
    by_number = detector.stream_scores(values, times=seconds)
    np.testing.assert_array_equal(by_number, detector.stream_scores(values, times=stamps))
    assert not np.array_equal(by_number, detector.stream_scores(values))  # profile left out
    with pytest.raises(ValueError, match="1499 times for 1500 rows"):
        detector.stream_scores(values, times=seconds[1:])


def test_a_file_with_a_time_column_trains_a_profile(tmp_path):
    from trainer.train import train

    values = stream_checks.series("normal")[:600, 0]
    stamps = stream_checks.times(600)
    lines = ["timestamp,v"] + [
        f"{np.datetime64(int(t), 's')},{v}" for t, v in zip(stamps, values, strict=True)
    ]
    (tmp_path / "timed.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "untimed.csv").write_text("\n".join(["v", *map(str, values)]) + "\n")
    options = TrainOptions(algorithm="online")
    assert train(tmp_path / "timed.csv", options).manifest.stream.profile is not None
    assert train(tmp_path / "untimed.csv", options).manifest.stream.profile is None


def test_a_model_over_more_sensors_than_a_profile_takes_trains_without_one():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(300, 65))
    names = [f"s{i}" for i in range(65)]
    options = TrainOptions(algorithm="zscore")
    result = train_values(values, names, options, "wide", times=stream_checks.times(300))
    assert result.manifest.stream.profile is None
    assert result.manifest.stream.novelty is not None
