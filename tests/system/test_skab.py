"""The same path on real data: SKAB's water pump (skipped where ../shared/data is absent)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from agent.model.table import read_table
from fleet.alerts import AlertSubscriber
from fleet.replay import readings_from_csv, replay
from tests.conftest import DEVICE, SHARED_DATA, run_cli, wait_for, wait_status

SKAB_FILE = SHARED_DATA / "skab" / "valve1" / "0.csv"
pytestmark = pytest.mark.skipif(
    not SKAB_FILE.exists(), reason=f"SKAB data not found at {SKAB_FILE} (shared/data is optional)"
)


def test_skab_file_through_trainer_agent_and_brokers(tmp_path, broker, start_agent):
    model = tmp_path / "skab.onnx"
    trained = run_cli(
        "trainer",
        "train",
        str(SKAB_FILE),
        "--out",
        str(model),
        "--train-rows",
        "400",
        "--label-column",
        "anomaly",
        "--json",
    )
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert "Volume Flow RateRMS" in summary["sensors"] and "changepoint" not in summary["sensors"]
    base_rate = float(read_table(SKAB_FILE).labels("anomaly").mean())
    # Better than flagging at random; detection quality itself is measured by the benchmark.
    assert summary["metrics"]["precision"] > base_rate and summary["metrics"]["recall"] > 0.3

    scored = run_cli("agent", "score", str(model), str(SKAB_FILE))
    assert scored.returncode == 0, scored.stderr
    rows = list(csv.DictReader(io.StringIO(scored.stdout)))
    flagged = sum(r["anomaly"] == "1" for r in rows)

    local, upstream = broker("local"), broker("upstream")
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(local, upstream, model=model)
    wait_status(upstream.port, "online")
    readings = readings_from_csv(SKAB_FILE)
    replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/valve1", batch=50)
    stats = agent.wait_stored(len(readings))
    assert stats["readings"] == len(readings) == len(rows)
    wait_for(lambda: not agent.stats()["alerts_pending"], 30, "outbox drained")
    assert subscriber.wait_until(lambda a: len(a) == agent.stats()["alerts_delivered"], 30)
    assert flagged > 0 and subscriber.alerts, "anomalies in SKAB's valve test should alert"
    assert set(subscriber.alerts[0]["sensors"]) == set(summary["sensors"])
    subscriber.close()
    assert agent.stop() == 0
