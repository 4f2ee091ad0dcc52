"""`edge-agent score` goes through the agent's runtime path and equals the trainer's reference."""

from __future__ import annotations

import csv
import io

import numpy as np

from agent.model.table import read_table
from tests.conftest import run_cli
from trainer.features import sliding_windows


def test_score_cli_equals_the_trainer_reference(trained, model_path, sim_data):
    result = run_cli("agent", "score", str(model_path), str(sim_data.live_csv))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    table = read_table(sim_data.live_csv)
    window = trained.manifest.window
    assert len(rows) == table.rows
    assert all(r["score"] == "" and r["anomaly"] == "0" for r in rows[: window - 1])

    got = np.array([float(r["score"]) for r in rows[window - 1 :]])
    values = table.matrix(trained.manifest.sensor_names)
    want, _ = trained.pipeline.reference(sliding_windows(values, window))
    np.testing.assert_allclose(got, want, atol=1e-5)
    flags = np.array([int(r["anomaly"]) for r in rows[window - 1 :]])
    np.testing.assert_array_equal(flags, got >= trained.manifest.alert_threshold)
    assert 0 < flags.sum() < len(flags)


def test_score_cli_names_missing_sensor_columns(model_path, tmp_path):
    data = tmp_path / "other.csv"
    data.write_text("timestamp,speed\n2026-01-01T00:00:00Z,1\n")
    result = run_cli("agent", "score", str(model_path), str(data))
    assert result.returncode == 2
    assert "flow_lpm" in result.stderr and result.stdout == ""


def test_score_cli_rejects_a_file_that_is_not_a_model(tmp_path, sim_data):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not an onnx file at all")
    result = run_cli("agent", "score", str(fake), str(sim_data.live_csv))
    assert result.returncode == 2
    assert "fake.onnx" in result.stderr
