"""The agent as a service: systemd's notify protocol and watchdog, SIGHUP reload, Prometheus
metrics, JSON logs. Real agent processes between real brokers; systemd's side is a real unix
datagram socket read by the test."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.alert import Alert
from agent.notify import Notifier, Watchdog
from agent.store.batch import Batch
from agent.store.database import DB_NAME, Store
from fleet.alerts import AlertSubscriber
from fleet.mqtt import connect
from fleet.replay import publish_payloads, readings_from_csv
from testbed.mosquitto import free_port
from tests.agent.test_store import _damage_middle, _readings
from tests.conftest import DEVICE, wait_for, wait_status


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: collects what the agent sends."""

    def __init__(self) -> None:
        # A short path: unix socket paths are limited to 108 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="notify-", dir="/tmp"))
        self.path = self.folder / "sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self.messages.extend(data.decode().splitlines())

    def count(self, field: str) -> int:
        with self._lock:
            return sum(m == field or m.startswith(field) for m in self.messages)

    def wait(self, field: str, count: int = 1, timeout: float = 30) -> None:
        wait_for(lambda: self.count(field) >= count, timeout, f"{field} x{count} from the agent")

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self.sock.close()
        self.path.unlink()
        self.folder.rmdir()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.close()


def test_agent_speaks_sd_notify_ready_status_watchdog_and_stopping(
    broker, start_agent, systemd: FakeSystemd
):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(
        local,
        upstream,
        env={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "1000000"},
    )
    wait_status(upstream.port, "online")
    systemd.wait("READY=1")
    systemd.wait("STATUS=")
    systemd.wait("WATCHDOG=1", count=3)  # one every half second
    assert systemd.count("STOPPING=1") == 0
    assert agent.stop() == 0
    assert systemd.count("STOPPING=1") == 1
    assert any("readings" in m for m in systemd.messages if m.startswith("STATUS="))


def test_watchdog_pings_stop_while_any_part_of_the_pipeline_is_stuck(
    systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
):
    now = [100.0]
    turned = {"pipeline": 100.0, "forwarder": 100.0}
    notifier = Notifier({"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "10000000"})
    watchdog = Watchdog(
        notifier,
        {name: (lambda n=name: turned[n]) for name in turned},
        clock=lambda: now[0],
    )
    assert watchdog.beat(), "first ping"
    assert not watchdog.beat(), "not again before half the interval"
    now[0] += 5
    turned["pipeline"] = now[0]
    turned["forwarder"] = now[0]
    assert watchdog.beat()
    with caplog.at_level(logging.ERROR, logger="agent.notify"):
        now[0] += 11  # the forwarder has not turned for 11 s > the 10 s interval
        turned["pipeline"] = now[0]
        assert not watchdog.beat()
        assert not watchdog.beat()
    assert "forwarder not turning" in caplog.text
    turned["forwarder"] = now[0]
    assert watchdog.beat(), "pings resume once it turns again"
    systemd.wait("WATCHDOG=1", count=3)
    assert systemd.count("WATCHDOG=1") == 3


def _metrics(port: int) -> dict[str, dict[tuple, float]]:
    """Scraped and parsed by Prometheus' own parser: name -> {labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_endpoint_counts_readings_alerts_dead_letters_and_latency(
    broker, start_agent, sim_data
):
    local, upstream = broker("local"), broker("upstream")
    port = free_port()
    # A port alone is bound to loopback.
    agent = start_agent(local, upstream, extra=f'[metrics]\nlisten = "{port}"\n')
    wait_status(upstream.port, "online")
    readings = readings_from_csv(sim_data.live_csv)
    client = connect("127.0.0.1", local.port)
    topic = f"edge/{DEVICE}/readings/pump-1"
    for reading in readings:
        client.publish(topic, json.dumps(reading), qos=1)
    for payload in (b"{not json", b"", b"[1, 2]"):
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    agent.wait_stored(len(readings) + 3)
    stats = wait_for(
        lambda: (s := agent.stats())["alerts_pending"] == 0 and s, 30, "alerts delivered"
    )

    m = _metrics(port)
    assert m["edge_agent_readings_total"][()] == stats["readings"] == len(readings)
    alerts = {dict(k)["level"]: v for k, v in m["edge_agent_alerts_total"].items()}
    assert set(alerts) == {"info", "warning", "critical"}
    assert sum(alerts.values()) == stats["alerts_delivered"] > 0
    dead = {dict(k)["reason"]: v for k, v in m["edge_agent_dead_letters_total"].items()}
    # `[1, 2]` is two readings that are not objects: two dead letters.
    assert dead["invalid_json"] == 1 and dead["empty"] == 1 and dead["not_object"] == 2
    assert m["edge_agent_outbox_pending"][()] == 0
    assert m["edge_agent_publish_latency_seconds_count"][()] == stats["alerts_delivered"]
    assert m["edge_agent_resident_memory_bytes"][()] > 10 * 2**20
    assert m["edge_agent_broker_connected"][(("broker", "upstream"),)] == 1
    (model_labels,) = m["edge_agent_model_info"]
    assert dict(model_labels)["device_id"] == DEVICE and dict(model_labels)["version"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    assert refused.value.code == 404
    assert agent.stop() == 0


def test_a_resumed_backlog_comes_through_an_inbox_of_receive_maximum_messages(
    broker, start_agent, sim_data
):
    """mosquitto 2.0.11 (what Debian 12 ships, installed here) stops honouring the Receive Maximum
    of a resumed session once the first acknowledgements arrive, and sends its whole queue: the
    inbox fills, the agent holds no more than that many messages, and the wait loses none."""
    local, upstream = broker("local"), broker("upstream")
    port = free_port()
    options = {"extra": f'[metrics]\nlisten = "{port}"\n', "local_keys": "receive_maximum = 20\n"}
    agent = start_agent(local, upstream, **options)
    wait_status(upstream.port, "online")  # its persistent session exists
    assert agent.stop() == 0
    readings = readings_from_csv(sim_data.live_csv)[:600]
    topic = f"edge/{DEVICE}/readings/pump-1"
    publish_payloads([json.dumps(r) for r in readings], "127.0.0.1", local.port, topic)

    agent = start_agent(local, upstream, **options)
    stats = agent.wait_stored(len(readings))
    assert stats["readings"] == len(readings) and stats["dead_letters"] == 0
    # The commit is visible before the counters move: wait for them.
    m = wait_for(
        lambda: (m := _metrics(port))["edge_agent_readings_total"][()] >= len(readings) and m,
        10,
        "the readings counted",
    )
    assert m["edge_agent_readings_total"][()] == len(readings), "each applied once"
    assert m["edge_agent_inbox_full_total"][()] > 0, "the broker sent more than the bound"
    assert 0 < m["edge_agent_inbox_peak_messages"][()] <= 20
    assert agent.stop() == 0


def test_sighup_applies_a_changed_config_without_losing_a_reading(broker, start_agent, sim_data):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream, extra="[forward]\nstatus_interval_s = 0.5\n")
    wait_status(upstream.port, "online")
    readings = readings_from_csv(sim_data.live_csv)[:400]
    client = connect("127.0.0.1", local.port)
    topic = f"edge/{DEVICE}/readings/pump-1"
    for n, reading in enumerate(readings):
        client.publish(topic, json.dumps(reading), qos=1).wait_for_publish(5)
        if n == 200:
            agent.config.write_text('log_format = "json"\n' + agent.config.read_text())
            agent.process.send_signal(signal.SIGHUP)
    client.disconnect()
    client.loop_stop()
    agent.wait_logged("reload: applying the new config")
    stats = agent.wait_stored(len(readings))
    assert stats["readings"] == len(readings) and stats["dead_letters"] == 0
    # The new config is in force: log lines are JSON objects now.
    wait_for(lambda: agent.logged('"msg": "agent started'), 30, "a JSON log line")
    assert agent.process.poll() is None
    assert agent.stop() == 0


def test_sighup_with_a_bad_config_keeps_the_running_one(broker, start_agent, sim_data):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    good = agent.config.read_text()
    agent.config.write_text(good + "[scoring]\nbatch_max = -1\n")
    agent.process.send_signal(signal.SIGHUP)
    agent.wait_logged("reload rejected")
    assert agent.logged("scoring.batch_max")
    readings = readings_from_csv(sim_data.live_csv)[:50]
    client = connect("127.0.0.1", local.port)
    for reading in readings:
        client.publish(
            f"edge/{DEVICE}/readings/pump-1", json.dumps(reading), qos=1
        ).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    assert agent.wait_stored(len(readings))["readings"] == len(readings)
    assert agent.logged("agent started") == 1, "the running pipeline was never restarted"
    assert agent.stop() == 0


def test_metrics_textfile_is_written_for_node_exporter(broker, start_agent, tmp_path: Path):
    local, upstream = broker("local"), broker("upstream")
    textfile = tmp_path / "edge-agent.prom"
    before = os.umask(0o027)  # the unit's UMask=0027, which the agent's process inherits
    try:
        agent = start_agent(
            local,
            upstream,
            extra=f'[metrics]\ntextfile = "{textfile}"\n[forward]\nstatus_interval_s = 0.5\n',
        )
    finally:
        os.umask(before)
    wait_status(upstream.port, "online")
    wait_for(textfile.exists, 30, "the metrics textfile")
    names = {f.name for f in text_string_to_metric_families(textfile.read_text())}
    assert {"edge_agent_readings", "edge_agent_outbox_pending"} <= names
    # node_exporter reads it through the group (issue 17, item 4); it was 0600 from mkstemp.
    assert textfile.stat().st_mode & 0o777 == 0o640
    assert agent.stop() == 0


def test_sighup_to_a_config_that_cannot_start_falls_back_to_the_running_one(
    broker, start_agent, sim_data
):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    # Valid, but its metrics port is taken: it passes every check and fails only to start.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        agent.config.write_text(agent.config.read_text() + f'[metrics]\nlisten = "{port}"\n')
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_logged("could not start")
        assert agent.logged("metrics.listen")
    finally:
        taken.close()
    readings = readings_from_csv(sim_data.live_csv)[:30]
    client = connect("127.0.0.1", local.port)
    for reading in readings:
        info = client.publish(f"edge/{DEVICE}/readings/pump-1", json.dumps(reading), qos=1)
    info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    assert agent.wait_stored(len(readings))["readings"] == len(readings)
    assert agent.process.poll() is None
    assert agent.stop() == 0


def test_sighup_during_start_up_does_not_kill_the_agent(broker, start_agent):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    # As soon as the handler is there, while the agent is still starting: the signal must not
    # end it (SIGHUP's default action), and the pipeline must still come up.
    wait_for(lambda: _catches(agent.process.pid, signal.SIGHUP), 10, "a SIGHUP handler")
    agent.process.send_signal(signal.SIGHUP)
    wait_status(upstream.port, "online")
    assert agent.process.poll() is None
    assert agent.stop() == 0


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler for `sig` (SigCgt in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_a_corrupt_database_is_salvaged_and_the_quarantine_reported_upstream(broker, start_agent):
    """#13 item 10 through the agent: a database with a damaged page and two pending alerts.
    The file is moved aside as before; now the alerts still reach upstream, and the status
    and metrics say what happened."""
    local, upstream = broker("local"), broker("upstream")
    port = free_port()
    extra = f'[metrics]\nlisten = "{port}"\n'
    agent = start_agent(local, upstream, extra=extra)
    wait_status(upstream.port, "online")
    assert agent.stop() == 0
    store = Store(agent.data_dir)
    topic = f"edge/{DEVICE}/alerts/pump-1"
    alerts = [
        (topic, Alert(f"a{n}", "pump-1", "firing", "info", {"id": f"a{n}", "level": "info"}))
        for n in (1, 2)
    ]
    store.commit_batch(Batch(alerts=alerts))
    for b in range(10):
        store.commit_batch(Batch(readings=_readings(500, start=b * 500)))
    store.close()
    _damage_middle(agent.data_dir / DB_NAME)
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    try:
        agent = start_agent(local, upstream, extra=extra)
        assert subscriber.wait_until(lambda got: len(got) == 2, 30), agent.log.read_text()
        status = wait_status(upstream.port, "online", where=lambda s: s.get("storage_incidents"))
        (incident,) = status["storage_incidents"]
        assert incident["kind"] == "corrupt" and incident["salvaged"]["pending_alerts"] == 2
        assert ".corrupt-" in incident["moved_to"]
        m = _metrics(port)
        assert m["edge_agent_storage_incidents_total"][(("kind", "corrupt"),)] == 1
        assert m["edge_agent_storage_incidents_total"][(("kind", "wal_damaged"),)] == 0
        assert agent.logged("storage incident")
        assert agent.stop() == 0
    finally:
        subscriber.close()
