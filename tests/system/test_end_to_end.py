"""The whole path through real parts: brokers, the agent process, SQLite, ONNX Runtime."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime

from agent.readings import stored_readings
from fleet.alerts import AlertSubscriber
from fleet.mqtt import connect
from fleet.replay import readings_from_csv, replay
from testbed.mosquitto import Mosquitto
from tests.conftest import DEVICE, wait_for, wait_status

ALERT_FIELDS = {
    "id",
    "device_id",
    "asset",
    "ts",
    "level",
    "score",
    "model",
    "sensors",
    "top_sensors",
    "message",
    "state",
}


def test_alerts_arrive_upstream_with_documented_fields(
    broker, start_agent, follow_alerts, sim_data, trained
):
    local, upstream = broker("local"), broker("upstream")
    cli = follow_alerts(upstream.address, "--count", "2")
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    readings = readings_from_csv(sim_data.live_csv)
    replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/pump-7")

    stats = agent.wait_stored(len(readings))
    wait_for(lambda: not agent.stats()["alerts_pending"], 30, "outbox drained")
    delivered = agent.stats()["alerts_delivered"]
    assert subscriber.wait_until(lambda alerts: len(alerts) == delivered, 30)
    assert stats["readings"] == len(readings) and stats["dead_letters"] == 0

    manifest = trained.manifest
    alerts = subscriber.alerts
    assert len({a["id"] for a in alerts}) == len(alerts) >= 2
    for alert in alerts:
        assert alert.keys() >= ALERT_FIELDS
        assert alert["device_id"] == DEVICE and alert["asset"] == "pump-7"
        assert alert["model"] == {"id": manifest.model_id, "version": manifest.version}
        assert alert["level"] in ("info", "warning", "critical")
        assert alert["state"] in ("firing", "resolved")
        assert 0.0 <= alert["score"] <= 1.0
        assert set(alert["sensors"]) == set(manifest.sensor_names)
        assert {t["sensor"] for t in alert["top_sensors"]} <= set(manifest.sensor_names)
        assert alert["top_sensors"][0]["sensor"] in alert["message"]
        datetime.fromisoformat(alert["ts"])
    firing = [a for a in alerts if a["state"] == "firing"]
    assert _faults_hit(firing, sim_data) >= 3, "most injected faults should raise an alert"

    printed = [json.loads(line) for line in cli.communicate(timeout=30)[0].splitlines()]
    assert [a["id"] for a in printed] == [a["id"] for a in alerts[:2]]
    subscriber.close()
    assert agent.stop() == 0


def _faults_hit(firing: list[dict], sim_data) -> int:
    stamps = [r["ts"] for r in readings_from_csv(sim_data.live_csv)]
    epoch = [datetime.fromisoformat(s).timestamp() for s in stamps]
    starts = [datetime.fromisoformat(a["episode_start"]).timestamp() for a in firing]
    return sum(
        any(epoch[f.start] <= s <= epoch[min(f.end + 10, len(epoch) - 1)] for s in starts)
        for f in sim_data.faults
    )


def test_backlog_is_delivered_after_an_upstream_outage(broker, start_agent, sim_data):
    local, upstream = broker("local"), broker("upstream", persistence=True)
    # A persistent subscriber: the broker queues alerts for it while it is away.
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, client_id="ops", persistent=True)
    subscriber.close()
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    upstream.stop()

    readings = readings_from_csv(sim_data.live_csv)
    replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/pump-1")
    stats = agent.wait_stored(len(readings))
    assert stats["alerts_pending"] >= 2 and stats["alerts_delivered"] == 0
    assert agent.process.poll() is None, "the agent must survive the outage"

    upstream.start()
    wait_for(lambda: agent.stats()["alerts_pending"] == 0, 60, "backlog delivered")
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, client_id="ops", persistent=True)
    produced = _outbox_ids_in_order(agent)
    assert subscriber.wait_until(lambda a: len(a) == len(produced), 30)
    assert [a["id"] for a in subscriber.alerts] == produced, "all delivered, in produced order"
    subscriber.close()
    assert agent.stop() == 0


def _outbox_ids_in_order(agent) -> list[str]:
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        return [row[0] for row in db.execute("SELECT alert_id FROM outbox ORDER BY seq")]


def test_status_is_retained_online_then_offline_on_stop(broker, start_agent):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    assert agent.stop() == 0
    # A subscriber arriving after the stop still finds the retained offline status.
    assert wait_status(upstream.port, "offline", timeout=10)["device_id"] == DEVICE


def test_online_waits_until_the_agent_can_consume_readings(broker, start_agent, tmp_path):
    upstream = broker("upstream")
    local = Mosquitto(tmp_path / "local-later")  # a port, but no broker on it yet
    agent = start_agent(local, upstream)
    wait_for(lambda: "upstream connected" in agent.log.read_text(), 30, "upstream connection")
    assert _retained_status(upstream.port) is None, "online before subscribing to readings"
    try:
        local.start()
        wait_status(upstream.port, "online")
    finally:
        local.stop()
    assert agent.stop() == 0


def _retained_status(port: int) -> dict | None:
    """The retained status, if any: a marker published after subscribing arrives after it."""
    got: list[dict] = []
    marker = threading.Event()

    def on_message(_c, _u, msg) -> None:
        if msg.topic == "marker":
            marker.set()
        else:
            got.append(json.loads(msg.payload))

    client = connect("127.0.0.1", port, subscribe="#", on_message=on_message)
    client.publish("marker", b"", qos=1)
    try:
        assert marker.wait(10), "marker not echoed"
    finally:
        client.disconnect()
        client.loop_stop()
    return got[-1] if got else None


def test_status_goes_offline_by_last_will_when_the_agent_dies(broker, start_agent):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    agent.process.kill()
    agent.process.wait()
    # mosquitto sends the will once it sees the TCP connection closed by the kernel.
    wait_status(upstream.port, "offline", timeout=20)


def test_bad_input_is_dead_lettered_and_scoring_goes_on(broker, start_agent, sim_data, trained):
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    readings = readings_from_csv(sim_data.live_csv)[:60]
    good = [json.dumps(r) for r in readings]
    sensor = next(k for k in readings[0] if k != "ts")
    bad = [
        b"{not json",
        b"",
        json.dumps([1, 2]).encode(),
        json.dumps({**readings[0], "ts": "yesterday"}).encode(),
        json.dumps({k: v for k, v in readings[0].items() if k != sensor}).encode(),
        json.dumps({**readings[0], sensor: "high"}).encode(),
        json.dumps({**readings[0], sensor: float("nan")}).encode(),
        json.dumps({**readings[5], sensor: 1.0}).encode(),  # an earlier time: out of order
        json.dumps(readings[6]).encode(),  # a byte-identical resend: skipped as a copy
    ]
    client = connect("127.0.0.1", local.port)
    topic = f"edge/{DEVICE}/readings/pump-1"
    for n, payload in enumerate(good):
        client.publish(topic, payload, qos=1).wait_for_publish(5)
        if n == 30:
            # Late and repeated readings are judged against what is stored: a reading that
            # arrives in the same batch as older ones is put in order, not rejected.
            agent.wait_stored(31)
            for b in bad:
                client.publish(topic, b, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()

    expected = {
        "invalid_json": 1,
        "empty": 1,
        "not_object": 2,  # [1, 2]: each item stands or falls alone
        "bad_ts": 1,
        "missing_sensor": 1,
        "not_numeric": 1,
        "not_finite": 1,
        "out_of_order": 1,
    }
    stats = agent.wait_stored(len(good) + sum(expected.values()))
    agent.wait_logged("skipped 1 copies")
    assert stats["readings"] == len(good)
    assert stats["dead_letters_by_reason"] == expected
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        scored = sum(r.score is not None for r in stored_readings(db))
    assert scored == len(good) - trained.manifest.window + 1, "neighbours of bad input are scored"
    assert agent.stop() == 0


def test_a_huge_reading_is_never_read_into_memory(broker, start_agent, sim_data):
    """A local broker without a size limit delivered a 150 MB reading whole: the agent peaked
    at 530 MiB (the unit's MemoryMax is 256M) to dead-letter it. The agent now tells the broker
    the largest message it takes; a payload over `max_payload_bytes` but under that is still an
    `oversized` dead letter."""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    reading = readings_from_csv(sim_data.live_csv)[0]
    client = connect("127.0.0.1", local.port)
    topic = f"edge/{DEVICE}/readings/pump-1"
    try:
        client.publish(topic, b"x" * 100_000_000, qos=1).wait_for_publish(60)
        client.publish(topic, b"x" * 100_000, qos=1).wait_for_publish(5)
        client.publish(topic, json.dumps(reading), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    stats = agent.wait_stored(2)  # in order: the huge one was dropped before these came
    assert stats["readings"] == 1 and stats["dead_letters_by_reason"] == {"oversized": 1}
    assert agent.peak_rss_mib() <= 160
    assert agent.stop() == 0
