"""Range novelty (#15) through the agent as a process between real brokers: wild readings on
one sensor (±1e38, a value past float32, NaN) raise one alert that ends, leave a bounded state
that loads, and do not stop a later fault from alerting."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from agent.model.score import Scorer
from agent.model.stream import Stream
from fleet.mqtt import connect
from fleet.replay import readings_from_csv
from tests.conftest import DEVICE, AgentProcess, run_cli, wait_status
from trainer.api import AnomalyDetector

TOPIC = f"edge/{DEVICE}/readings/pump-1"
SENSOR = "flow_lpm"


def _publish(port: int, payloads: list[str]) -> None:
    """Publish at QoS 1 in order; return once the broker has them all."""
    client = connect("127.0.0.1", port)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *_: acked.release()
    try:
        for payload in payloads:
            client.publish(TOPIC, payload, qos=1)
        for _ in payloads:
            assert acked.acquire(timeout=120), "the broker acknowledged every reading"
    finally:
        client.disconnect()
        client.loop_stop()


def _alerts(agent: AgentProcess) -> list[dict]:
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        rows = db.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    return [json.loads(payload) for (payload,) in rows]


def _stream_blob(agent: AgentProcess) -> bytes:
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        (blob,) = db.execute("SELECT stream FROM asset_state WHERE asset = 'pump-1'").fetchone()
    return blob


def _stored_scores(agent: AgentProcess) -> np.ndarray:
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        blobs = db.execute(
            "SELECT score FROM readings WHERE asset = 'pump-1' ORDER BY first_ts"
        ).fetchall()
    return np.frombuffer(b"".join(blob for (blob,) in blobs), dtype=np.float32)


def _offline_scores(model: Path, readings: list[dict], folder: Path) -> np.ndarray:
    """`edge-agent score` on the same readings as a CSV file, as a user runs it."""
    table = folder / "readings.csv"
    names = [k for k in readings[0] if k != "ts"]
    with table.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["timestamp", *names])
        out.writerows([r["ts"], *(repr(r[n]) for n in names)] for r in readings)
    scored = run_cli("agent", "score", str(model), str(table))
    assert scored.returncode == 0, scored.stderr
    rows = list(csv.DictReader(io.StringIO(scored.stdout)))
    return np.array([float(r["score"]) if r["score"] else np.nan for r in rows])


# The Python API's window casts 1e300 to float32 in this process: inf, as on the gateway.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_wild_readings_alert_once_stay_bounded_and_a_later_fault_still_alerts(
    broker, start_agent, sim_data, model_path, tmp_path: Path
):
    manifest = Scorer.load(model_path).manifest
    novelty = manifest.stream.novelty
    assert novelty is not None, "the test model carries range novelty"
    layer = Stream(manifest.stream, manifest.window, len(manifest.sensors))
    normal = readings_from_csv(sim_data.train_csv)[:600]
    k = manifest.sensor_names.index(SENSOR)
    wild = [1e38, -1e38] * 5 + [1e300, -1e300]
    # Before the wild readings, a window's worth; after, long enough for the hold to end (a
    # window back in range) and the episode to resolve (`resolve_after`) with room to spare,
    # then a fault of three readings 3 training ranges high.
    quiet = 60 + len(wild) + 200
    fault = novelty.high[k] + 3 * (novelty.high[k] - novelty.low[k])
    readings = [dict(r) for r in normal[: quiet + 3 + 20]]
    for i, value in enumerate(wild):
        readings[60 + i][SENSOR] = value
    for r in readings[quiet : quiet + 3]:
        r[SENSOR] = fault
    payloads = [json.dumps(r) for r in readings]
    payloads.insert(65, json.dumps({**readings[64], SENSOR: float("nan")}))  # not JSON's

    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    _publish(local.port, payloads[:60])
    agent.wait_stored(60)
    size = len(_stream_blob(agent))
    _publish(local.port, payloads[60 : quiet + 1])
    agent.wait_stored(quiet + 1)
    assert len(_stream_blob(agent)) == size, "the layer's state stays the same size"
    burst = [a for a in _alerts(agent) if a["asset"] == "pump-1"]
    assert [a["state"] for a in burst] == ["firing", "resolved"], burst

    _publish(local.port, payloads[quiet + 1 :])
    stats = agent.wait_stored(len(payloads))
    assert stats["readings"] == len(readings) and stats["dead_letters"] == 1, stats
    assert agent.process.poll() is None, "the agent is running"
    assert agent.stop() == 0
    later = _alerts(agent)[len(burst) :]
    assert later and later[0]["state"] == "firing", "the fault after the wild readings alerts"
    state = layer.load(_stream_blob(agent))
    assert len(state.novelty) == 6 + 2 * len(manifest.sensors)
    stored = _stored_scores(agent)
    assert (stored[60:80] >= 0.5).all(), "the wild readings scored"
    offline = _offline_scores(model_path, readings, tmp_path)
    np.testing.assert_allclose(stored, offline, atol=1e-6, equal_nan=True)
    # The Python API's, on the same rows and times (0 before the first full window).
    values = np.array([[r[n] for n in manifest.sensor_names] for r in readings])
    times = [datetime.fromisoformat(r["ts"]) for r in readings]
    api = AnomalyDetector.load(model_path).stream_scores(values, times=times)
    np.testing.assert_array_equal(np.nan_to_num(stored, nan=0.0), api.astype(np.float32))
