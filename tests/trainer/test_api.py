"""The tutorials' API: fit / predict / decision_function / score / save / load, scored by ONNX."""

from __future__ import annotations

import csv
import doctest
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import trainer.api
import trainer.metrics
from agent.model.table import TableError, read_table
from fleet.alerts import AlertSubscriber
from fleet.replay import replay
from tests.conftest import DEVICE, run_cli, wait_for, wait_status
from trainer import (
    AnomalyDetector,
    NotFittedError,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from trainer.detectors import DETECTORS, is_sequence_detector
from trainer.metrics import classification_metrics, roc_auc


@pytest.mark.parametrize("module", [trainer.api, trainer.metrics])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 or module is trainer.metrics
    assert result.failed == 0


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = np.array([[1.0, 0.8, 0.0], [0.0, 0.6, 1.0], [0.0, 0.0, 0.5]])
    train = rng.normal(size=(600, 3)) @ mix
    test = np.r_[rng.normal(size=(200, 3)) @ mix, rng.normal(size=(40, 3)) @ mix + [4, -4, 4]]
    labels = np.r_[np.zeros(200), np.ones(40)].astype(int)
    return train, test, labels


ROW_BY_ROW = sorted(a for a in DETECTORS if not is_sequence_detector(a))


@pytest.mark.parametrize("algorithm", ROW_BY_ROW)
def test_every_algorithm_fits_row_by_row_as_in_the_tutorials(algorithm):
    train, test, labels = _data()
    detector = AnomalyDetector(
        algorithm=algorithm, contamination=0.05, random_state=42, threshold_factor=1.0
    )
    assert detector.fit(train) is detector
    score = detector.score(test)
    predicted = detector.predict(test)
    decision = detector.decision_function(test)
    assert score.shape == predicted.shape == decision.shape == (len(test),)
    assert ((score >= 0) & (score <= 1)).all()
    assert set(np.unique(predicted)) <= {1, -1}
    assert np.array_equal(predicted == -1, decision <= 0)
    assert np.allclose(decision, 0.5 - score)
    # Lower decision = more anomalous: the shifted rows rank below the normal ones.
    assert roc_auc(labels, -decision) > 0.9
    trained_flagged = (detector.predict(train) == -1).mean()
    assert trained_flagged == pytest.approx(0.05, abs=0.02)


@pytest.mark.parametrize("algorithm", ROW_BY_ROW)
def test_one_sensor_is_enough_for_every_algorithm(algorithm):
    rng = np.random.default_rng(2)
    train = rng.normal(size=(400, 1))
    detector = AnomalyDetector(algorithm=algorithm).fit(train)
    score = detector.score([[0.0], [9.0]])
    assert score[1] > score[0] and score[1] >= 0.5
    assert np.allclose(detector.contributions([[9.0]]), 1.0)


def test_save_then_load_scores_the_same_and_the_agent_agrees(tmp_path: Path):
    train, test, _ = _data()
    detector = AnomalyDetector(algorithm="isolation_forest", contamination=0.05).fit(train)
    path = detector.save(tmp_path / "api.onnx")
    loaded = AnomalyDetector.load(path)
    assert loaded.sensors == ["sensor_0", "sensor_1", "sensor_2"]
    assert np.array_equal(loaded.score(test), detector.score(test))
    assert repr(loaded) == repr(detector)

    # The gateway's own offline scorer, as a subprocess, on the same rows.
    csv_path = tmp_path / "test.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", *loaded.sensors])
        w.writerows([i, *row] for i, row in enumerate(test.tolist()))
    scored = run_cli("agent", "score", str(path), str(csv_path))
    assert scored.returncode == 0, scored.stderr
    rows = list(csv.DictReader(io.StringIO(scored.stdout)))
    # `score` is the graph's score of each row's window alone, the agent's `graph_score`;
    # `stream_scores` runs the stream layer over the rows in order, the agent's `score`.
    assert np.allclose([float(r["graph_score"]) for r in rows], detector.score(test), atol=1e-6)
    stream = loaded.stream_scores(test)
    assert np.allclose([float(r["score"]) for r in rows], stream, atol=1e-6)
    assert [int(r["anomaly"]) for r in rows] == (stream >= 0.5).astype(int).tolist()

    # A loaded detector saves the same file again.
    again = loaded.save(tmp_path / "again.onnx")
    assert again.read_bytes() == path.read_bytes()


def test_a_windowed_detector_scores_each_row_with_the_window_ending_at_it(sim_data):
    table = read_table(sim_data.live_csv)
    values = table.matrix(table.sensor_columns("anomaly"))
    labels = table.labels("anomaly")
    clean = read_table(sim_data.train_csv)
    train = clean.matrix(clean.sensor_columns())
    detector = AnomalyDetector(algorithm="pca", window=10).fit(train)
    score = detector.score(values)
    assert (score[:9] == 0).all() and (score[9:] > 0).all()
    assert detector.manifest.window == 10 and detector.manifest.features[0] == "last"
    assert roc_auc_score(labels, score) > 0.7
    with pytest.raises(ValueError, match="rate_of_change"):
        AnomalyDetector(window=1, features=["last", "rate_of_change"]).fit(train)


def test_dataframes_are_matched_by_column_name():
    train, test, _ = _data()
    names = ["pressure", "flow", "current"]
    detector = AnomalyDetector(contamination=0.05).fit(pd.DataFrame(train, columns=names))
    assert detector.sensors == names
    want = detector.score(test)  # an array is taken in the fitted order
    shuffled = pd.DataFrame(test, columns=names)[["current", "pressure", "flow"]]
    shuffled["label"] = 0  # extra columns are not the model's business
    assert np.array_equal(detector.score(shuffled), want)
    with pytest.raises(ValueError, match=r"no column\(s\) \['flow'\]"):
        detector.predict(shuffled.drop(columns="flow"))
    text = pd.DataFrame({"pressure": ["a"], "flow": [1.0], "current": [1.0]})
    with pytest.raises(ValueError, match=r"\['pressure'\] do not hold numbers"):
        detector.predict(text)
    twice = pd.DataFrame(test[:, [0, 0, 1, 2]], columns=["pressure", "pressure", "flow", "current"])
    with pytest.raises(ValueError, match=r"more than one column named \['pressure'\]"):
        detector.predict(twice)
    with pytest.raises(ValueError, match="more than one column"):
        AnomalyDetector().fit(twice)


def test_bad_input_is_named():
    train, _, _ = _data()
    with pytest.raises(NotFittedError, match="not fitted"):
        AnomalyDetector().predict(train)
    with pytest.raises(NotFittedError):
        AnomalyDetector().save("never.onnx")
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        AnomalyDetector().fit(train[:, 0])
    broken = train.copy()
    broken[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        AnomalyDetector().fit(broken)
    detector = AnomalyDetector().fit(train)
    with pytest.raises(ValueError, match="expects 3"):
        detector.predict(train[:, :2])
    with pytest.raises(ValueError, match="unknown algorithm"):
        AnomalyDetector(algorithm="kmeans").fit(train)
    with pytest.raises(ValueError, match="too few"):
        AnomalyDetector().fit(train[:5])
    with pytest.raises(TypeError, match=r"features=\['mean'\]"):
        AnomalyDetector(window=10, features="mean")
    with pytest.raises(ValueError, match="at least one feature"):
        AnomalyDetector(window=10, features=[]).fit(train)


def test_metric_helpers_agree_with_the_pooled_metrics_and_refuse_predict_output():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    flags = np.where(rng.random(300) < 0.8, y, 1 - y)
    want = classification_metrics(y, flags)
    assert precision_score(y, flags) == want["precision"]
    assert recall_score(y, flags) == want["recall"]
    assert f1_score(y, flags) == pytest.approx(
        2 * want["precision"] * want["recall"] / (want["precision"] + want["recall"])
    )
    assert f1_score(y, flags.astype(bool)) == want["f1"]
    scores = y + rng.normal(0, 0.8, 300)
    assert roc_auc_score(y, scores) == roc_auc(y, scores)
    with pytest.raises(ValueError, match=r"predict\(X\) == -1"):
        f1_score(y, np.where(flags == 1, -1, 1))
    with pytest.raises(ValueError, match="300 rows"):
        recall_score(y, flags[:10])


def test_a_model_saved_from_the_api_runs_on_the_gateway(broker, start_agent, tmp_path):
    """Window 1 (the API's default) through the real agent: every reading is scored."""
    train, test, _ = _data()
    detector = AnomalyDetector(algorithm="gaussian_mixture", contamination=0.05).fit(train)
    model = detector.save(tmp_path / "api.onnx")
    local, upstream = broker("local"), broker("upstream")
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(local, upstream, model=model)
    wait_status(upstream.port, "online")
    readings = [
        {"ts": 1_700_000_000 + i, **dict(zip(detector.sensors, row, strict=True))}
        for i, row in enumerate(test.tolist())
    ]
    replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/line1", batch=20)
    stats = agent.wait_stored(len(test))
    assert stats["readings"] == len(test) and stats["dead_letters"] == 0
    wait_for(lambda: subscriber.alerts, 30, "an alert for the shifted rows")
    assert subscriber.alerts[0]["top_sensors"][0]["sensor"] in detector.sensors
    subscriber.close()


def test_score_files_scores_many_files_with_one_session(model_path, sim_data, tmp_path):
    detector = AnomalyDetector.load(model_path)
    session = detector._fitted().session
    second = tmp_path / "second.csv"
    second.write_text(sim_data.train_csv.read_text())
    files = [sim_data.live_csv, second, sim_data.live_csv]
    scored = list(detector.score_files(files))
    assert [f.path for f in scored] == files
    assert detector._fitted().session is session  # no reload per file
    for f in scored:
        table = read_table(f.path)
        assert f.timestamps == table.timestamps()
        np.testing.assert_array_equal(f.score, detector.score(table.matrix(detector.sensors)))
    missing = tmp_path / "missing.csv"
    with pytest.raises(TableError, match=r"missing\.csv: cannot read"):
        list(detector.score_files([missing]))
