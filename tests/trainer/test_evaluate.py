"""`edge-trainer evaluate` as users run it, checked against scikit-learn's own metrics."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, roc_auc_score

from agent.model.table import read_table
from tests.conftest import SimData, run_cli
from trainer.metrics import classification_metrics, pr_auc, roc_auc
from trainer.readout import episodes


def test_evaluate_reports_the_metrics_of_the_agents_own_scores(model_path: Path, sim_data: SimData):
    done = run_cli(
        "trainer", "evaluate", str(model_path), str(sim_data.live_csv),
        "--label-column", "anomaly", "--from-row", "100",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert set(got) >= {"precision", "recall", "f1", "roc_auc", "pr_auc", "far", "mar", "n"}
    table = read_table(sim_data.live_csv)
    assert got["n"] == table.rows - 100

    scored = run_cli("agent", "score", str(model_path), str(sim_data.live_csv))
    rows = list(csv.DictReader(io.StringIO(scored.stdout)))
    scores = np.array([float(r["score"] or 0.0) for r in rows])[100:]
    flagged = np.array([int(r["anomaly"]) for r in rows])[100:]
    labels = table.labels("anomaly")[100:]
    assert got["precision"] == pytest.approx(precision_score(labels, flagged), abs=1e-6)
    assert got["f1"] == pytest.approx(f1_score(labels, flagged), abs=1e-6)
    # `edge-agent score` prints 6 decimals, which makes ties the full scores do not have.
    assert got["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=2e-3)
    assert got["pr_auc"] == pytest.approx(average_precision_score(labels, scores), abs=2e-3)
    assert got["roc_auc"] > 0.6, "better than chance on the simulated faults"
    # `episodes` reads the same scores as the agent's alerts: anomalous while one is open
    full = np.array([float(r["score"] or 0.0) for r in rows])
    read = episodes(full, got["threshold"])
    want = classification_metrics(labels, read.open[100:])
    for key in ("precision", "recall", "f1", "far", "mar"):
        assert got["episodes"][key] == pytest.approx(want[key], abs=1e-6), key
    assert got["episodes"]["alerts"] == int(read.fires[100:].sum()) > 0


def test_rank_metrics_handle_ties_like_scikit_learn():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) + labels * 0.3, 1)  # many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert pr_auc(labels, scores) == pytest.approx(average_precision_score(labels, scores))


def test_evaluate_names_a_missing_label_column(model_path: Path, sim_data: SimData):
    done = run_cli(
        "trainer", "evaluate", str(model_path), str(sim_data.live_csv), "--label-column", "nope"
    )
    assert done.returncode == 2 and "no label column 'nope'" in done.stderr


def _strict(text: str) -> object:
    """Parse as a strict JSON parser (jq, JavaScript) does: NaN and Infinity are errors."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_metric_without_a_value_is_printed_as_null(model_path: Path, tmp_path: Path):
    """Data with no anomaly has no ROC AUC: the line must stay JSON (issue 17, item 3)."""
    clean = tmp_path / "clean.csv"
    made = run_cli("trainer", "simulate", "--out", str(clean), "--rows", "300", "--seed", "5")
    assert made.returncode == 0, made.stderr
    done = run_cli("trainer", "evaluate", str(model_path), str(clean), "--label-column", "anomaly")
    assert done.returncode == 0, done.stderr
    got = _strict(done.stdout)
    assert got["roc_auc"] is None and got["pr_auc"] is None
