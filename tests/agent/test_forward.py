"""The forwarder against a real upstream broker: on a real file system that fills up, a
database that turns read-only, a wall clock that jumps."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest

import agent.forward
import agent.store.commit
from agent.alert import Alert
from agent.config import BrokerConfig, ForwardConfig
from agent.forward import Forwarder
from agent.store.batch import Batch
from agent.store.database import DB_NAME, Store
from agent.upstream import StatusReport, Upstream
from fleet.alerts import AlertSubscriber
from fleet.mqtt import connect
from fleet.replay import readings_from_csv, replay
from tests.clockstep import SteppableClock
from tests.conftest import DEVICE, fill, wait_for, wait_status

ALERTS = 5
SENSORS = ("flow_lpm", "pressure_bar", "current_a", "temperature_c", "vibration_mms")


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
    forwarder = _forwarder(upstream.port, store)
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


def test_deliveries_waiting_to_be_recorded_are_bounded(
    broker, small_disk: Path, monkeypatch: pytest.MonkeyPatch
):
    """#13 item 9: deliveries the disk does not take are held in memory, but not without
    bound: at the bound nothing more is sent until they are written."""
    monkeypatch.setattr(agent.forward, "_MAX_UNMARKED", 2)
    upstream = broker("upstream")
    store = Store(small_disk)
    store.commit_batch(Batch(alerts=[_alert(n) for n in range(ALERTS)]))
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ballast = fill(small_disk)
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    forwarder = _forwarder(upstream.port, store)
    forwarder.start()
    try:
        assert subscriber.wait_until(lambda got: len(got) == 2, 30), "sent up to the bound"
        wait_for(lambda: store.problem() is not None, 30, "the failed record")
        for _ in range(2):  # two more turns of the loop, each of which would send more
            turned = forwarder.turned
            wait_for(lambda t=turned: forwarder.turned != t, 10, "a turn of the forwarder")
        assert len(subscriber.alerts) == 2, "nothing more while the records wait"
        ballast.unlink()
        assert subscriber.wait_until(lambda got: len(got) == ALERTS, 30), "the rest, once written"
        wait_for(lambda: store.stats()["alerts_pending"] == 0, 30, "deliveries recorded")
        assert store.problem() is None
    finally:
        forwarder.stop(drain_seconds=0)
        subscriber.close()
        store.close()


def _forwarder(port: int, store: Store) -> Forwarder:
    config = ForwardConfig()
    report = StatusReport(f"edge/{DEVICE}/status", dict, config.status_interval_s)
    return Forwarder(Upstream(BrokerConfig(port=port), "forwarder-test", report), config, store)


def test_an_alert_raised_while_the_clock_was_a_month_behind_is_delivered(
    broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """#13 item 8: a Pi without a real-time clock raises an alert before NTP has set its clock
    (30 days behind); once the clock is right, the alert is seconds old, not 30 days."""
    upstream = broker("upstream")
    store = Store(tmp_path)
    month_behind = time.time() - 30 * 86400
    with monkeypatch.context() as clock:
        fake = SimpleNamespace(time=lambda: month_behind, monotonic=time.monotonic)
        clock.setattr(agent.store.commit, "time", fake)
        store.commit_batch(Batch(alerts=[_alert(1)]))
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    forwarder = _forwarder(upstream.port, store)
    caplog.set_level(logging.WARNING, logger="agent.forward")
    forwarder.start()
    try:
        assert subscriber.wait_until(lambda got: len(got) == 1, 30), caplog.text
        wait_for(lambda: store.stats()["alerts_delivered"] == 1, 30, "the delivery recorded")
        assert store.stats()["alerts_expired"] == 0
        assert "expired" not in caplog.text
    finally:
        forwarder.stop(drain_seconds=0)
        subscriber.close()
        store.close()


def test_the_message_expiry_upstream_is_the_alert_s_remaining_running_time(
    broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """#13 item 8: the MQTT 5 message expiry the forwarder sets is the rest of the alert's time
    to live by elapsed time. Raised with the clock 6 days behind and sent just after NTP
    corrected it, the alert is seconds old: brokers may keep it for (nearly) the whole 7 days,
    not for the one day a wall-clock difference leaves."""
    upstream = broker("upstream")
    store = Store(tmp_path)
    six_days_behind = time.time() - 6 * 86400
    with monkeypatch.context() as clock:
        fake = SimpleNamespace(time=lambda: six_days_behind, monotonic=time.monotonic)
        clock.setattr(agent.store.commit, "time", fake)
        store.commit_batch(Batch(alerts=[_alert(1)]))
    expiries: list[int] = []
    got = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        expiries.append(msg.properties.MessageExpiryInterval)
        got.set()

    client = connect(
        "127.0.0.1", upstream.port, subscribe=f"edge/{DEVICE}/alerts/#", on_message=on_message
    )
    forwarder = _forwarder(upstream.port, store)
    forwarder.start()
    try:
        assert got.wait(30), "the alert upstream"
        ttl = ForwardConfig().alert_ttl_s
        assert ttl - 60 <= expiries[0] <= ttl, expiries
    finally:
        forwarder.stop(drain_seconds=0)
        client.disconnect()
        client.loop_stop()
        store.close()


def test_alerts_of_an_agent_whose_clock_was_a_month_behind_go_upstream_after_ntp(
    broker, start_agent, sim_data, tmp_path: Path
):
    """#13 item 8 through the agent: it runs with its wall clock 30 days behind (a Pi without
    a real-time clock, before NTP) and raises alerts while upstream is down; it restarts with
    the clock right (NTP synced) and upstream back. The alerts are minutes old, not a month:
    they go upstream. The agent before this branch expired them all at once."""
    local, upstream = broker("local"), broker("upstream")
    upstream.stop()
    month_behind = SteppableClock(tmp_path / "clock")
    month_behind.step(-30 * 86400)
    agent = start_agent(local, upstream, env=month_behind.env)
    agent.wait_logged("subscribed topic")
    readings = readings_from_csv(sim_data.live_csv)
    replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/pump-1")
    raised = agent.wait_stored(len(readings))["alerts_pending"]
    assert raised > 0
    assert agent.stop() == 0
    upstream.start()
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    try:
        agent = start_agent(local, upstream)
        assert subscriber.wait_until(lambda got: len(got) == raised, 30), agent.log.read_text()
        assert agent.stats()["alerts_expired"] == 0
        assert agent.stop() == 0
    finally:
        subscriber.close()


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` on a read-only bind mount of itself: the file cannot be written, even by root,
    while its folder stays writable (as for a file on a read-only medium or made immutable)."""
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({mounted.stderr.decode().strip()}); needs root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _stopped_with_two_pending(start_agent, local, upstream):
    """An agent that ran once (its database made) and stopped, with two alerts left pending."""
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    assert agent.stop() == 0
    store = Store(agent.data_dir)
    store.commit_batch(Batch(alerts=[_alert(1), _alert(2)]))
    store.close()
    return agent


def test_a_read_only_database_does_not_stop_delivery_and_the_status_says_why(
    broker, start_agent, tmp_path: Path
):
    """#13 item 9: the agent starts on a database that cannot be written. The forwarder
    used to die on "attempt to write a readonly database" before sending, the agent exited and
    the retained status still said storage ok. Now the pending alerts go upstream, the agent
    stays up and the status says storage is failing, and why."""
    local, upstream = broker("local"), broker("upstream")
    agent = _stopped_with_two_pending(start_agent, local, upstream)
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    try:
        with read_only(agent.data_dir / DB_NAME):
            agent = start_agent(local, upstream)
            assert subscriber.wait_until(lambda got: len(got) == 2, 30), agent.log.read_text()
            status = wait_status(
                upstream.port,
                "online",
                where=lambda s: (
                    s.get("storage") == "failing"
                    and "read-only" in (s.get("storage_problem") or "")
                ),
            )
            assert status["buffer"]["alerts_pending"] == 2, "not recorded: the disk refuses"
            # A reading cannot be committed either: it is held (unacknowledged), not fatal.
            client = connect("127.0.0.1", local.port)
            reading = json.dumps({"ts": 1.0e9, **dict.fromkeys(SENSORS, 1.0)})
            client.publish(f"edge/{DEVICE}/readings/pump-1", reading, qos=1).wait_for_publish(5)
            client.disconnect()
            client.loop_stop()
            agent.wait_logged("cannot store")
            wait_status(
                upstream.port,
                "online",
                where=lambda s: "commit: database is read-only" in (s.get("storage_problem") or ""),
            )
            assert agent.process.poll() is None, "the agent keeps running"
            assert agent.stop() == 0
    finally:
        subscriber.close()


def test_a_read_only_data_folder_at_start_does_not_stop_delivery(
    broker, start_agent, tmp_path: Path
):
    """#13 item 9 with the whole folder read-only (an SD card's file system remounted
    read-only after errors): SQLite cannot make its WAL files there and refused to open, so
    the agent exited 2 at every start and its pending alerts never went. Now it opens the
    database read-only, sends them, and says storage is failing."""
    local, upstream = broker("local"), broker("upstream")
    agent = _stopped_with_two_pending(start_agent, local, upstream)
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    try:
        with read_only(agent.data_dir):
            agent = start_agent(local, upstream)
            assert subscriber.wait_until(lambda got: len(got) == 2, 30), agent.log.read_text()
            wait_status(
                upstream.port,
                "online",
                where=lambda s: "database is read-only" in (s.get("storage_problem") or ""),
            )
            agent.wait_logged("cannot be written (read-only file system?)")
            assert agent.process.poll() is None, "the agent keeps running"
            assert agent.stop() == 0
    finally:
        subscriber.close()


def test_a_corrupt_database_in_a_read_only_folder_is_a_clear_error(
    broker, start_agent, tmp_path: Path
):
    """A damaged database cannot be moved aside in a read-only folder (the two come together
    on a failing SD card): the agent exited with an OSError traceback. It says what is wrong."""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    assert agent.stop() == 0
    database = agent.data_dir / DB_NAME
    database.write_bytes(b"not a database, whatever it was" * 100)
    with read_only(agent.data_dir):
        agent = start_agent(local, upstream)
        assert agent.process.wait(timeout=30) == 2
    assert agent.logged("cannot move it aside") and not agent.logged("Traceback")
