"""The tutorials' helpers: DataLoader, AnomalyMetrics, AnomalyVisualizer, detector.model."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest

import trainer.metrics
from agent.model.table import TableError
from trainer import AnomalyDetector
from trainer.data import DataLoader
from trainer.metrics import AnomalyMetrics, classification_metrics, pr_auc, roc_auc
from trainer.visualization import AnomalyVisualizer


def _csv(path: Path, rows: int = 300, label: str = "anomaly") -> Path:
    rng = np.random.default_rng(0)
    lines = [f"timestamp;temp;flow;{label}"]
    for i in range(rows):
        odd = int(i >= rows - 10)
        lines.append(
            f"2024-01-01T00:{i // 60:02d}:{i % 60:02d};{rng.normal() + 6 * odd:.4f};"
            f"{rng.normal():.4f};{odd}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_loader_reads_a_file_as_the_trainer_does(tmp_path: Path):
    data = DataLoader().load_csv(_csv(tmp_path / "d.csv"))
    assert data.sensors == ["temp", "flow"] and data.X.shape == (300, 2)
    assert data.labels is not None and data.labels.sum() == 10
    assert data.timestamps[0] == "2024-01-01T00:00:00"
    train, test = data.split(0.8)
    assert len(train) == 240 and len(test) == 60 and test.labels.sum() == 10
    frame = data.to_frame()
    assert list(frame.columns) == ["timestamp", "temp", "flow", "label"]
    assert str(frame["timestamp"].dtype).startswith("datetime64")


def test_the_loader_names_what_is_wrong(tmp_path: Path):
    path = _csv(tmp_path / "d.csv", label="fault")
    with pytest.raises(ValueError, match="no label column 'anomaly'"):
        DataLoader(label_column="anomaly").load_csv(path)
    with pytest.raises(ValueError, match="cannot also be a sensor"):
        DataLoader(label_column="fault").load_csv(path, sensors=["temp", "fault"])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(TableError, match="row 3 has 1 fields"):
        DataLoader().load_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="train_fraction"):
        DataLoader(label_column="fault").load_csv(path).split(1.0)


def test_anomaly_metrics_agree_with_the_evaluate_figures():
    rng = np.random.default_rng(1)
    labels = (rng.random(500) < 0.1).astype(int)
    scores = labels * 0.4 + rng.random(500) * 0.7
    flags = scores >= 0.5
    m = AnomalyMetrics(labels, flags, scores)
    report = m.report()
    assert {k: report[k] for k in classification_metrics(labels, flags)} == (
        classification_metrics(labels, flags)
    )
    assert report["roc_auc"] == roc_auc(labels, scores) and report["pr_auc"] == pr_auc(
        labels, scores
    )
    same = AnomalyMetrics.from_predict(labels, np.where(flags, -1, 1), scores)
    assert same.report() == report
    assert AnomalyMetrics([0, 0], [0, 0]).report()["roc_auc"] is None, "undefined, not NaN"


def test_anomaly_metrics_refuse_ambiguous_or_mismatched_input():
    with pytest.raises(ValueError, match="for predict\\(\\)'s output"):
        AnomalyMetrics([0, 1], [1, -1])
    with pytest.raises(ValueError, match="1 \\(normal\\) and -1"):
        AnomalyMetrics.from_predict([0, 1], [0, 1])
    with pytest.raises(ValueError, match="2 rows, y_pred 3"):
        AnomalyMetrics([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="scores of shape"):
        AnomalyMetrics([0, 1], [0, 1], scores=[0.3])


def test_metrics_docstring_example_runs():
    assert doctest.testmod(trainer.metrics).failed == 0


def test_the_visualizer_draws_the_reports_pictures_and_saves_png(tmp_path: Path):
    data = DataLoader().load_csv(_csv(tmp_path / "d.csv"))
    train, _ = data.split(0.8)
    detector = AnomalyDetector(algorithm="pca", contamination=0.02).fit(train.X)
    viz = AnomalyVisualizer(detector)
    figures = {
        "sensors": viz.plot_sensors(data.X, data.labels),
        "scores": viz.plot_scores(data.X),
        "histogram": viz.plot_score_histogram(data.X),
        "contributions": viz.plot_contributions(data.X),
        "pr": viz.plot_precision_recall(data.X, data.labels),
    }
    for name, figure in figures.items():
        out = viz.save(figure, tmp_path / f"{name}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figures["sensors"].axes) == 2, "one panel per sensor"
    quiet = np.zeros((50, 2))
    with pytest.raises(ValueError, match="no row is flagged"):
        viz.plot_contributions(quiet)
    with pytest.raises(ValueError, match="labels of shape"):
        viz.plot_sensors(data.X, data.labels[:5])


def test_detector_model_shows_the_fitted_parameters_and_names_the_rest(tmp_path: Path):
    X = np.random.default_rng(2).normal(size=(300, 2))
    detector = AnomalyDetector(algorithm="isolation_forest", n_estimators=50).fit(X)
    assert detector.model.n_estimators == 50 and detector.model.max_samples == "auto"
    loaded = AnomalyDetector.load(detector.save(tmp_path / "m.onnx"))
    assert loaded.model.get_params() == detector.model.get_params()
    assert loaded.options == {"n_estimators": 50}, "a loaded model refits as it was fitted"
    with pytest.raises(AttributeError, match=r"no parameter 'depth'; it has \['max_samples'"):
        _ = detector.model.depth
    with pytest.raises(ValueError, match=r"isolation_forest has no option\(s\) \['trees'\]"):
        AnomalyDetector(algorithm="isolation_forest", trees=5).fit(X)
