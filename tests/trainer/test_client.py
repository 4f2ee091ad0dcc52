"""PynomalyClient: one-call detection, small batches scored against history, bounded state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import trainer.client as client_module
from trainer import AnomalyDetector, NeedsHistoryError, PynomalyClient
from trainer.client import Workspace


@pytest.fixture
def client() -> PynomalyClient:
    return PynomalyClient(Workspace())


def _frame(rows: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    df.loc[rows - 10 :, "a"] += 8.0
    return df


def test_detect_anomalies_flags_the_contamination_share_with_scores_and_explanations(client):
    df = _frame()
    results = client.detect_anomalies(
        df, algorithm="isolation_forest", contamination=0.02, return_explanations=True
    )
    predictions, scores = results["predictions"], results["scores"]
    assert predictions.dtype == bool and len(predictions) == len(scores) == len(df)
    assert predictions.mean() == pytest.approx(0.02, abs=0.005)
    assert predictions[-10:].all(), "the shifted rows are flagged"
    assert np.array_equal(predictions, scores >= results["threshold"])
    top = results["explanations"][-1]["feature_importance"]
    assert set(top) == {"a", "b", "c"} and max(top, key=top.get) == "a"
    assert sum(top.values()) == pytest.approx(1.0, abs=1e-6)


def test_the_tutorials_options_reach_the_detector(client):
    results = client.detect_anomalies(_frame(400), n_estimators=200, random_state=3)
    detector = results["detector"]
    assert detector.model.n_estimators == 200
    assert detector.manifest.training.seed == 3
    with pytest.raises(ValueError, match=r"no option\(s\) \['n_trees'\]"):
        client.detect_anomalies(_frame(400), n_trees=200)


def test_one_reading_is_scored_against_history_shown_to_another_client():
    shared = Workspace()
    PynomalyClient(shared).detect_anomalies(_frame(), contamination=0.02)
    fresh = PynomalyClient(shared)
    normal = fresh.detect_anomalies([{"a": 0.1, "b": 0.0}], contamination=0.02)
    odd = fresh.detect_anomalies([{"a": 9.0, "b": 0.0}], contamination=0.02)
    assert not normal["predictions"][0] and odd["predictions"][0]
    assert odd["detector"].sensors == ["a", "b"], "fitted on the history's matching columns"
    assert odd["detector"].manifest.training.rows == 1000


def test_one_reading_with_no_history_says_what_to_do(client):
    with pytest.raises(NeedsHistoryError, match=r"Fit on history first.*load_model"):
        client.detect_anomalies([{"x": 1.0, "y": 2.0}], contamination=0.02)
    client.detect_anomalies(_frame(), contamination=0.02)
    with pytest.raises(NeedsHistoryError, match=r"columns \['a', 'zz'\]"):
        client.detect_anomalies([{"a": 1.0, "zz": 2.0}], contamination=0.02)


def test_a_loaded_model_scores_small_batches(client, tmp_path: Path):
    path = tmp_path / "m.onnx"
    AnomalyDetector(algorithm="pca", contamination=0.02).fit(_frame()[["a", "b", "c"]]).save(path)
    client.load_model(path)
    batch = [
        {"c": 0.0, "b": 0.0, "a": 0.0, "extra": 5.0},
        {"c": 0.0, "b": 0.0, "a": 12.0, "extra": 5.0},
    ]
    results = client.detect_anomalies(batch, contamination=0.02)
    assert results["detector"].algorithm == "pca"
    assert results["predictions"].tolist() == [False, True]


def test_time_series_scores_windows_and_sequence_detectors_require_it(client):
    t = np.arange(800)
    df = pd.DataFrame({"u": np.sin(t / 9), "v": np.cos(t / 9)})
    results = client.detect_anomalies(
        df, algorithm="lstm_autoencoder", contamination=0.05, time_series=True
    )
    assert len(results["predictions"]) == 800
    assert not results["predictions"][:9].any(), "rows before the first window are not flagged"
    assert results["detector"].manifest.window == 10
    with pytest.raises(ValueError, match="pass time_series=True"):
        client.detect_anomalies(df, algorithm="lstm_autoencoder")
    # Against that history, a few rows are too few for one window: said, not scored as 0.
    recent = df.tail(3).to_dict("records")
    with pytest.raises(ValueError, match="fewer than the model's window of 10 consecutive"):
        client.detect_anomalies(recent, algorithm="lstm_autoencoder", time_series=True)
    last = client.detect_anomalies(
        df.tail(12).to_dict("records"), algorithm="lstm_autoencoder", time_series=True
    )
    assert len(last["scores"]) == 12 and last["scores"][-1] > 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pd.DataFrame({"a": [1.0] * 99 + [np.nan]}), r"column 'a' row 99 is nan: fill or drop"),
        (pd.DataFrame({"a": ["x"] * 100}), r"column\(s\) \['a'\] do not hold numbers"),
        ([{"a": 1.0}, {"b": 2.0}], r"row 1 has keys \['b'\]; row 0 has \['a'\]"),
        ([{"a": "high"}], "numbers only"),
        ([[1.0, 2.0], [3.0]], "numbers only"),
        (np.zeros(5), "2-D"),
        (pd.DataFrame(), "rows and columns"),
        ([], "2-D"),
        (np.array([[np.inf, 1.0]] * 100), "row 0 is inf"),
        (pd.DataFrame([[1.0, 2.0]] * 100, columns=["a", "a"]), r"named \['a'\]"),
    ],
)
def test_bad_data_is_named(client, data, message):
    with pytest.raises(ValueError, match=message):
        client.detect_anomalies(data)


@pytest.mark.parametrize("contamination", [0.0, -0.1, 0.5, 2.0])
def test_a_contamination_out_of_range_is_named(client, contamination):
    with pytest.raises(ValueError, match=r"contamination must be in \(0, 0.5\)"):
        client.detect_anomalies([{"a": 1.0}], contamination=contamination)


def test_unknown_algorithm_lists_the_known_ones(client):
    with pytest.raises(ValueError, match=r"unknown algorithm 'magic'; choose from \[.*'isolation"):
        client.detect_anomalies(_frame(200), algorithm="magic")


def test_the_shared_workspace_stays_bounded(monkeypatch):
    """Many differently named datasets, long ones and many small-batch fits keep at most the
    limits: a process that loops over files cannot grow it without bound."""
    monkeypatch.setattr(client_module, "MAX_ROWS", 300)
    workspace = Workspace()
    client = PynomalyClient(workspace)
    rng = np.random.default_rng(5)
    for k in range(client_module.MAX_DATASETS + 3):
        df = pd.DataFrame(rng.normal(size=(400, 2)), columns=[f"s{k}", "t"])
        client.detect_anomalies(df, algorithm="zscore", contamination=0.05)
    assert len(workspace.histories) == client_module.MAX_DATASETS
    assert all(len(v) == 300 for v in workspace.histories.values())
    assert ("s0", "t") not in workspace.histories, "the least recent went first"
    for contamination in np.linspace(0.01, 0.2, client_module.MAX_MODELS + 4):
        client.detect_anomalies([{"t": 0.0}], algorithm="zscore", contamination=contamination)
    assert len(workspace.fitted) == client_module.MAX_MODELS
