"""The forwarder against a real upstream broker, on a real file system that fills up."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.alert import Alert
from agent.config import BrokerConfig, ForwardConfig
from agent.forward import Forwarder
from agent.store import Batch, Store
from fleet.alerts import AlertSubscriber
from tests.conftest import DEVICE, fill, wait_for

ALERTS = 5


def _alert(n: int) -> tuple[str, Alert]:
    payload = {"id": f"a{n}", "level": "warning", "state": "firing", "asset": "pump-1"}
    return f"edge/{DEVICE}/alerts/pump-1", Alert(f"a{n}", "pump-1", "firing", "warning", payload)


def test_alerts_delivered_on_a_full_disk_are_recorded_once_space_returns(
    broker, small_disk: Path, caplog: pytest.LogCaptureFixture
):
    upstream = broker("upstream")
    store = Store(small_disk)
    store.commit_batch(Batch(alerts=[_alert(n) for n in range(ALERTS)]))
    # An empty WAL: recording a delivery needs new disk space, and there is none.
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ballast = fill(small_disk)
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    forwarder = Forwarder(
        BrokerConfig(port=upstream.port),
        ForwardConfig(),
        store,
        "forwarder-test",
        status_topic=f"edge/{DEVICE}/status",
        status=dict,
    )
    caplog.set_level(logging.WARNING, logger="agent.forward")
    forwarder.start()
    try:
        assert subscriber.wait_until(lambda got: len(got) == ALERTS, 30), "alerts sent"
        wait_for(lambda: "cannot record" in caplog.text, 30, "the failed record to be logged")
        assert store.stats()["alerts_pending"] == ALERTS, "not recorded while the disk is full"
        assert forwarder.failure is None, "the forwarder keeps running on a full disk"
        ballast.unlink()
        wait_for(lambda: store.stats()["alerts_pending"] == 0, 30, "deliveries recorded")
        assert subscriber.duplicates == 0, "delivered alerts are not sent again in the same run"
    finally:
        forwarder.stop(drain_seconds=0)
        subscriber.close()
        store.close()
