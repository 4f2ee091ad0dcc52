"""`edge-agent score` goes through the agent's runtime path and equals the trainer's reference."""

from __future__ import annotations

import csv
import io

import numpy as np

from agent.model.stream import Stream
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
    assert all(
        r["score"] == "" and r["anomaly"] == "0" and r["graph_score"] == ""
        for r in rows[: window - 1]
    )

    # graph_score is the model's own score of each window, the trainer's reference
    graph = np.array([float(r["graph_score"]) for r in rows[window - 1 :]])
    values = table.matrix(trained.manifest.sensor_names)
    windows = sliding_windows(values, window)
    want, _ = trained.pipeline.reference(windows)
    np.testing.assert_allclose(graph, want, atol=1e-5)
    # score is the stream layer's over those graph scores, in order, as the agent runs it
    got = np.array([float(r["score"]) for r in rows[window - 1 :]])
    m = trained.manifest
    stream = Stream(m.stream, m.window, len(m.sensors))
    ends = table.times()[window - 1 :]  # the daily profile reads each window's time
    adapted = stream.step(stream.new_state(), want, windows.astype(np.float32), ends)
    np.testing.assert_allclose(got, adapted, atol=1e-5)
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


def test_score_cli_prints_the_time_column_and_writes_out_atomically(model_path, sim_data, tmp_path):
    printed = run_cli("agent", "score", str(model_path), str(sim_data.live_csv))
    assert printed.returncode == 0, printed.stderr
    rows = list(csv.DictReader(io.StringIO(printed.stdout)))
    # the file's own time column first
    assert list(rows[0]) == ["timestamp", "score", "anomaly", "graph_score"]
    assert [r["timestamp"] for r in rows] == read_table(sim_data.live_csv).timestamps()

    out = tmp_path / "scores" / "live.csv"
    written = run_cli("agent", "score", str(model_path), str(sim_data.live_csv), "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert written.stdout == "" and f"wrote {len(rows)} scores" in written.stderr
    assert out.read_text() == printed.stdout
    assert [p.name for p in out.parent.iterdir()] == ["live.csv"]  # no temp file left


def test_score_cli_numbers_rows_of_a_file_without_a_time_column(model_path, sim_data, tmp_path):
    table = read_table(sim_data.live_csv)
    names = table.sensor_columns("anomaly")
    bare = tmp_path / "bare.csv"
    lines = [",".join(names)] + [
        ",".join(table.text[n][i] for n in names) for i in range(table.rows)
    ]
    bare.write_text("\n".join(lines) + "\n")
    result = run_cli("agent", "score", str(model_path), str(bare))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["row"] for r in rows] == [str(i) for i in range(table.rows)]


def test_score_cli_out_of_a_missing_sensor_leaves_no_file(model_path, tmp_path):
    data = tmp_path / "other.csv"
    data.write_text("timestamp,speed\n2026-01-01T00:00:00Z,1\n")
    out = tmp_path / "scores.csv"
    result = run_cli("agent", "score", str(model_path), str(data), "--out", str(out))
    assert result.returncode == 2 and "flow_lpm" in result.stderr
    assert list(tmp_path.iterdir()) == [data]


def test_score_text_keeps_scores_near_one_apart():
    from agent.model.score_csv import score_text

    near = [0.9995, 0.99999, 0.9999999, 0.999999912, 0.9999999999]
    texts = [score_text(s) for s in near]
    assert len(set(texts)) == len(texts)
    assert [float(t) for t in texts] == sorted(float(t) for t in texts)
    assert all(abs(float(t) - s) <= (1 - s) * 1e-5 for t, s in zip(texts, near, strict=True))
    assert score_text(0.123456789) == "0.123457"


def test_score_cli_scores_a_reading_past_float32(model_path, sim_data, tmp_path):
    """A reading of 1e300 (finite in the CSV, infinite in the float32 window, as on the
    gateway): the graph's score of the windows holding it is not a number, and printing it
    stopped `edge-agent score` with a traceback halfway through the file. The stream layer's
    score (range novelty's 1) alerts; the graph's prints as nan."""
    lines = sim_data.live_csv.read_text().splitlines()[:41]
    header = lines[0].split(",")
    row = lines[30].split(",")
    row[header.index("flow_lpm")] = "1e300"
    lines[30] = ",".join(row)
    data = tmp_path / "wild.csv"
    data.write_text("\n".join(lines) + "\n")
    result = run_cli("agent", "score", str(model_path), str(data))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 40
    assert rows[28]["graph_score"] != "nan" and rows[28]["anomaly"] == "0"
    assert rows[29]["graph_score"] == "nan" and rows[29]["anomaly"] == "1"
    assert float(rows[-1]["score"]) >= 0.5, "the novelty's memory holds the alert"
