"""`edge-agent buffer stats|export|vacuum` as users run them, on real SQLite files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from agent.model.score import Scorer
from agent.store.database import Store
from tests.agent.buffers import T0, agent_database
from tests.conftest import run_cli
from trainer.simulate import SENSORS


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_export_writes_the_readings_by_sensor_name_and_filters(tmp_path: Path):
    data = agent_database(tmp_path / "data")
    out = tmp_path / "all.csv"
    done = run_cli("agent", "buffer", "export", "--data-dir", str(data), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "wrote 1200 readings" in done.stderr
    rows = _csv(out)
    assert list(rows[0]) == ["timestamp", "asset", *SENSORS]
    assert len(rows) == 1200 and rows[0]["timestamp"] == "2026-01-01T00:00:00+00:00"

    some = tmp_path / "some.csv"
    done = run_cli(
        "agent", "buffer", "export", "--data-dir", str(data), "--out", str(some),
        "--asset", "pump-2", "--since", "2026-01-01T01:00:00Z", "--until", str(T0 + 7200),
        "--with-scores",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = _csv(some)
    assert len(rows) == 60 and {r["asset"] for r in rows} == {"pump-2"}
    assert rows[0]["timestamp"] == "2026-01-01T01:00:00+00:00" and rows[0]["score"] == "0.25"


def test_an_export_trains_a_model_with_the_same_sensors(tmp_path: Path):
    data = agent_database(tmp_path / "data")
    out = tmp_path / "pump-1.csv"
    run_cli("agent", "buffer", "export", "--data-dir", str(data), "--out", str(out),
            "--asset", "pump-1")  # fmt: skip
    model = tmp_path / "retrained.onnx"
    trained = run_cli("trainer", "train", str(out), "--out", str(model), "--train-rows", "500")
    assert trained.returncode == 0, trained.stderr
    assert Scorer.load(model).manifest.sensor_names == list(SENSORS)


def test_vacuum_gives_evicted_space_back(tmp_path: Path):
    data = agent_database(tmp_path / "data", rows=5000)
    store = Store(data)
    with store.conn:
        store.conn.execute("DELETE FROM readings")
    store.close()
    done = run_cli("agent", "buffer", "vacuum", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    sizes = json.loads(done.stdout)
    assert sizes["bytes_after"] < sizes["bytes_before"] / 4


def test_buffer_commands_name_a_missing_or_unusable_database(tmp_path: Path):
    for command in ("stats", "vacuum"):
        done = run_cli("agent", "buffer", command, "--data-dir", str(tmp_path / "nowhere"))
        assert done.returncode == 2 and "no agent database" in done.stderr
    (tmp_path / "agent.db").write_bytes(b"not sqlite at all" * 64)
    done = run_cli("agent", "buffer", "stats", "--data-dir", str(tmp_path))
    assert done.returncode == 2 and "not a usable agent database" in done.stderr
    bare = Store(tmp_path / "bare")
    bare.close()
    done = run_cli("agent", "buffer", "export", "--data-dir", str(tmp_path / "bare"),
                   "--out", str(tmp_path / "x.csv"))  # fmt: skip
    assert done.returncode == 2 and "no sensor names" in done.stderr
    assert not (tmp_path / "x.csv").exists()
