"""`edge-trainer train --from-db`: refit from what the gateway stored, its alert episodes left
out. The database is written through the agent's own store and alert tracker, so a change of
the store's schema or of the alert payload fails here."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from agent.alert import AlertTracker
from agent.model.manifest import Thresholds
from agent.model.score import Scorer
from agent.readings import ReadingBlock
from agent.store.batch import Batch
from agent.store.database import DB_NAME, Store
from tests.conftest import run_cli
from trainer.buffer_db import BufferReadError, read_buffer
from trainer.calibration import LEVELS

SENSORS = ["flow", "pressure"]
T0 = 1_796_083_200.0  # 2026-12-01T00:00:00Z
STEP = 60.0
ROWS = 2000
FAULT = range(800, 900)  # readings of the fault; the episode resolves ten readings later
WINDOW = 20  # zscore's, the default detector


def _iso(i: float) -> str:
    return datetime.fromtimestamp(T0 + i * STEP, UTC).isoformat().replace("+00:00", "Z")


def _values(rows: int, seed: int) -> np.ndarray:
    t = np.arange(rows)
    rng = np.random.default_rng(seed)
    flow = 50 + 5 * np.sin(t / 30) + rng.normal(0, 0.5, rows)
    pressure = 3 + 0.2 * np.cos(t / 45) + rng.normal(0, 0.05, rows)
    return np.c_[flow, pressure]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An agent's database: pump1 with one fault and its episode, pump2 without."""
    store = Store(tmp_path / "agent")
    store.set_meta("sensors", json.dumps(SENSORS))
    tracker = AlertTracker(
        device_id="gw",
        model={"id": "m", "version": "1"},
        sensors=SENSORS,
        thresholds=Thresholds(**LEVELS),
        fire_after=3,
        resolve_after=10,
        top_sensors=2,
    )
    pump1, pump2 = _values(ROWS, 1), _values(ROWS, 2)
    pump1[FAULT.start : FAULT.stop, 0] += 40.0  # the fault: flow far off
    ts = T0 + STEP * np.arange(ROWS)
    score = np.where(np.isin(np.arange(ROWS), FAULT), 0.97, 0.1)
    for start in range(0, ROWS, 100):
        part = slice(start, start + 100)
        alerts = []
        for i in range(start, start + 100):
            alert = tracker.update("pump1", ts[i], score[i], np.array([0.9, 0.1]), pump1[i])
            if alert is not None:
                alerts.append(("edge/gw/alerts/pump1", alert))
        store.commit_batch(
            Batch(
                readings=[
                    ReadingBlock.of("pump1", ts[part], pump1[part], score=score[part]),
                    ReadingBlock.of("pump2", ts[part], pump2[part]),
                ],
                alerts=alerts,
            )
        )
    payloads = store.conn.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    assert [json.loads(p)["state"] for (p,) in payloads] == ["firing", "resolved"]
    store.close()
    return tmp_path / "agent"


def _train(*args: str):
    return run_cli("trainer", "train", "--json", *args)


def _digest(folder: Path) -> str:
    """The database file's (a WAL reader may create the empty -wal and -shm beside it)."""
    return hashlib.sha256((folder / DB_NAME).read_bytes()).hexdigest()


def test_retrain_from_the_buffer_leaves_the_episode_out(data_dir: Path, tmp_path: Path):
    before = _digest(data_dir)
    out = tmp_path / "pump1.onnx"
    result = _train(
        "--from-db", str(data_dir / DB_NAME), "--asset", "pump1",
        "--since", _iso(0), "--until", _iso(ROWS), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    # The fault (800-899), the ten readings to its resolution, a window on each side.
    left_out = (FAULT.stop + 10 - FAULT.start) + 2 * WINDOW
    assert summary["training_rows"] == ROWS - left_out
    assert "1 alert episode(s)" in result.stderr
    manifest = Scorer.load(out).manifest
    assert manifest.sensor_names == SENSORS  # the sensors stored with the readings
    assert manifest.sensors[0].max < 70, "no reading of the fault was fitted"
    assert _digest(data_dir) == before, "read-only"


def test_the_time_range_selects_the_readings(data_dir: Path, tmp_path: Path):
    result = _train(
        "--from-db", str(data_dir), "--asset", "pump2", "--since", _iso(1000),
        "--until", _iso(1500), "--sensors", "pressure", "--out", str(tmp_path / "m.onnx"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["training_rows"] == 500
    assert json.loads(result.stdout)["sensors"] == ["pressure"]


def test_reading_beside_a_running_agent(data_dir: Path):
    """WAL: a store open for writing does not stop the read-only reader, which sees its
    last commit."""
    store = Store(data_dir)
    try:
        more = T0 + STEP * np.arange(ROWS, ROWS + 50)
        store.commit_batch(Batch(readings=[ReadingBlock.of("pump2", more, _values(50, 3))]))
        got = read_buffer(data_dir, "pump2", None, None, margin=WINDOW)
    finally:
        store.close()
    assert len(got.ts) == ROWS + 50 and got.episodes == 0


def test_an_unknown_asset_is_refused_naming_the_stored_ones(data_dir: Path, tmp_path: Path):
    result = _train("--from-db", str(data_dir), "--asset", "pump9", "--out", str(tmp_path / "m"))
    assert result.returncode == 2
    assert "'pump9'" in result.stderr and "['pump1', 'pump2']" in result.stderr


def test_a_range_that_is_all_episode_is_refused(data_dir: Path, tmp_path: Path):
    result = _train(
        "--from-db", str(data_dir), "--asset", "pump1", "--since", _iso(790),
        "--until", _iso(930), "--out", str(tmp_path / "m.onnx"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "140 readings in the range, 0 left" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--asset", "pump1"], "either DATA"),
        (["--from-db", "DB"], "--from-db needs --asset"),
        (["--from-db", "DB", "--asset", "pump1", "--since", "yesterday"], "not a time"),
        (["--from-db", "DB", "--asset", "pump1", "--train-rows", "100"], "--train-rows"),
        (["--from-db", "DB", "--asset", "p", "--since", "2027-01-01", "--until", "2026-01-01"],
         "is not before"),
    ],
)  # fmt: skip
def test_bad_options_are_named(args, message, data_dir: Path, tmp_path: Path):
    args = [str(data_dir) if a == "DB" else a for a in args]
    result = _train(*args, "--out", str(tmp_path / "m.onnx"))
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path):
    fake = tmp_path / "agent.db"
    fake.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(BufferReadError, match="not an SQLite database"):
        read_buffer(fake, "pump1", None, None, margin=WINDOW)


def test_a_database_of_another_schema_is_refused_naming_the_column(tmp_path: Path):
    path = tmp_path / "agent.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE readings (id INTEGER PRIMARY KEY, asset TEXT, ts REAL, values_json TEXT);"
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, payload TEXT);"
    )
    conn.close()
    with pytest.raises(BufferReadError, match=r"lacks column\(s\) \['first_ts', 'last_ts', 'n'"):
        read_buffer(path, "pump1", None, None, margin=WINDOW)


def test_a_readings_row_whose_arrays_do_not_match_is_refused(data_dir: Path):
    conn = sqlite3.connect(data_dir / DB_NAME)
    with conn:
        conn.execute("UPDATE readings SET n = n + 1 WHERE id = 1")
    conn.close()
    with pytest.raises(BufferReadError, match="written with other sensors"):
        read_buffer(data_dir, "pump1", None, None, margin=WINDOW)


# A damaged or hand-made database: each a clear refusal (exit 2, naming what is wrong), none a
# traceback. The SQL is run on the fixture's database before training from it.
_DAMAGE = {
    "sensor names not JSON": (
        "UPDATE meta SET value = 'flow,pressure' WHERE key = 'sensors'",
        "stored sensor names",
    ),
    "sensor names nested past the recursion limit": (
        "UPDATE meta SET value = replace(printf('%.100000c', 'x'), 'x', '[') WHERE key = 'sensors'",
        "stored sensor names",
    ),
    "times stored as text": ("UPDATE readings SET ts = 'yesterday' WHERE id = 1", "readings row"),
    "times not whole float64s": (
        "UPDATE readings SET ts = x'00010203' WHERE id = 1",
        "readings row",
    ),
    "values not finite": (
        "UPDATE readings SET sensor_values = "
        "(SELECT sensor_values FROM readings WHERE id = 1) WHERE id = 1",  # made NaN below
        "not finite",
    ),
    "an alert not JSON": (
        "UPDATE outbox SET payload = 'garbage' WHERE seq = (SELECT min(seq) FROM outbox)",
        "alert in the outbox",
    ),
    "an alert's times of the wrong type": (
        "UPDATE outbox SET payload = json_set(payload, '$.episode_start', json('[1]')) "
        "WHERE seq = (SELECT min(seq) FROM outbox)",
        "alert in the outbox",
    ),
}


@pytest.mark.parametrize("damage", list(_DAMAGE))
def test_a_damaged_database_is_refused_naming_what_is_wrong(damage, data_dir, tmp_path):
    sql, message = _DAMAGE[damage]
    conn = sqlite3.connect(data_dir / DB_NAME)
    with conn:
        conn.execute(sql)
        if damage == "values not finite":
            (blob,) = conn.execute("SELECT sensor_values FROM readings WHERE id = 1").fetchone()
            nan = np.frombuffer(blob, "<f8").copy()
            nan[3] = np.nan
            conn.execute("UPDATE readings SET sensor_values = ? WHERE id = 1", (nan.tobytes(),))
    conn.close()
    result = _train("--from-db", str(data_dir), "--asset", "pump1", "--out", str(tmp_path / "m"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "m").exists()
