"""`--share`: consumers of one MQTT 5 shared subscription split the alert stream between them."""

from __future__ import annotations

import json

from fleet.alerts import AlertSubscriber
from fleet.mqtt import connect
from tests.conftest import wait_for

ALERTS = 60


def test_shared_consumers_split_the_alerts_without_loss_or_overlap(broker):
    upstream = broker("upstream")
    consumers = [
        AlertSubscriber("127.0.0.1", upstream.port, share="ops", client_id=f"ops-{n}")
        for n in range(2)
    ]
    try:
        _publish(upstream.port, [f"a{n}" for n in range(ALERTS)])
        got = lambda: [{a["id"] for a in c.alerts} for c in consumers]  # noqa: E731
        wait_for(lambda: sum(map(len, got())) >= ALERTS, 20, f"{ALERTS} alerts in all")
        first, second = got()
        assert first | second == {f"a{n}" for n in range(ALERTS)}
        assert not first & second, "each alert goes to one member of the share"
        assert first and second, "both members take part"
    finally:
        for c in consumers:
            c.close()


def test_alerts_count_prints_exactly_that_many_from_a_burst(broker, follow_alerts):
    """`--count N` stops at N even when more alerts arrive in the same network read."""
    upstream = broker("upstream")
    cli = follow_alerts(upstream.address, "--count", "2")
    _publish(upstream.port, [f"b{n}" for n in range(200)])
    out, _ = cli.communicate(timeout=30)
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["b0", "b1"]
    assert cli.returncode == 0


def _publish(port: int, ids: list[str]) -> None:
    """Alerts with these ids, QoS 1, in one burst, as an agent's forwarder sends them."""
    client = connect("127.0.0.1", port)
    for alert_id in ids:
        alert = {"id": alert_id, "level": "warning", "device_id": "gw", "asset": "p"}
        info = client.publish("edge/gw/alerts/p", json.dumps(alert), qos=1)
    info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
