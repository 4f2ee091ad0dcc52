"""Sparkplug B end to end: an edge node simulated here (births on request, data by alias,
report by exception) through a real mosquitto into the agent process, alerts upstream; and
the hostile variant, where the agent must keep reading the honest node."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from agent.sparkplug import schema
from agent.sparkplug.edge import EdgeNode
from fleet.alerts import AlertSubscriber
from fleet.mqtt import connect
from fleet.replay import readings_from_csv
from fleet.sparkplug import SparkplugNode
from testbed.mosquitto import Mosquitto
from tests.conftest import DEVICE, run_cli, wait_for, wait_status

CONFIG = (
    '[[ingest.sources]]\nname = "plc"\ntopic = "spBv1.0/plant/#"\nformat = "sparkplug_b"\n'
    "[ingest.sources.sparkplug]\nmax_nodes = 8\nmax_devices = 4\n"
)


def simulated_node(broker: Mosquitto, sensors: list[str]) -> SparkplugNode:
    """The edge node of `edge-fleet replay --sparkplug`: answers rebirth requests."""
    return SparkplugNode("127.0.0.1", broker.port, "plant/line-1/pump-7", sensors)


def _send(node: SparkplugNode, ts_ms: int, metric: dict) -> None:
    """A DDATA with one hand-made metric (by alias), in the node's sequence."""
    with node._lock:
        bad = schema.Payload(timestamp=ts_ms, seq=(node.node.seq + 1) % 256)
        node.node.seq = bad.seq
        bad.metrics.add(**metric)
        node._send((node.node.topic("DDATA", "pump-7"), bad.SerializeToString()))


def _readings(sim_data, sensors: list[str]) -> list[tuple[int, dict[str, float]]]:
    rows = readings_from_csv(sim_data.live_csv, sensors)
    return [
        (int(datetime.fromisoformat(str(r["ts"])).timestamp() * 1000), {s: r[s] for s in sensors})
        for r in rows
    ]


def test_sparkplug_edge_node_end_to_end(broker, start_agent, sim_data, trained):
    local, upstream = broker("local"), broker("upstream")
    sensors = trained.manifest.sensor_names
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(local, upstream, extra=CONFIG)
    wait_status(upstream.port, "online")
    node = simulated_node(local, sensors)
    readings = _readings(sim_data, sensors)
    # The agent has never seen a birth: the first message is a dead letter and asks for one.
    node.data(*readings[0])
    wait_for(lambda: node.rebirths == 1, 30, "a rebirth request")
    for reading in readings[1:]:
        node.data(*reading)
    node.wait_acked(30)

    stats = agent.wait_stored(len(readings))
    assert stats["dead_letters_by_reason"] == {"sparkplug_no_birth": 1}
    assert stats["readings"] == len(readings) - 1
    wait_for(lambda: not agent.stats()["alerts_pending"], 30, "outbox drained")
    delivered = agent.stats()["alerts_delivered"]
    assert delivered >= 2
    assert subscriber.wait_until(lambda alerts: len(alerts) == delivered, 30)
    assert {a["asset"] for a in subscriber.alerts} == {"pump-7"}
    assert node.rebirths == 1
    node.close()
    subscriber.close()
    assert agent.stop() == 0


def test_sparkplug_hostile_publishers(broker, start_agent, sim_data, trained):
    """Garbage, aliases never born, sequence gaps, wrong types and a flood of made-up nodes
    and devices: counted by reason, the agent stays up and the honest node's readings still
    go through."""
    local, upstream = broker("local"), broker("upstream")
    sensors = trained.manifest.sensor_names
    agent = start_agent(local, upstream, extra=CONFIG)
    wait_status(upstream.port, "online")
    node = simulated_node(local, sensors)
    readings = _readings(sim_data, sensors)[:200]
    node.data(*readings[0])
    wait_for(lambda: node.rebirths == 1, 30, "a rebirth request")
    node.data(*readings[1])  # it reports before the flood
    agent.wait_stored(2)

    hostile = connect("127.0.0.1", local.port)
    sent = {"sparkplug_bad_payload": 0, "sparkplug_unknown_alias": 0, "not_numeric": 0}
    for i in range(1, 51):
        hostile.publish("spBv1.0/plant/NBIRTH/evil", b"\xff\x00garbage" * i, qos=1)
        sent["sparkplug_bad_payload"] += 1
    for n in range(300):  # a flood of nodes, each with as many devices as it likes
        fake = EdgeNode("plant", f"fake-{n}", sensors)
        hostile.publish(*fake.node_birth(0), qos=1)
        for d in range(10):
            hostile.publish(*fake.device_birth(f"d{d}", 0, [1.0] * len(sensors)), qos=1)

    honest = 1
    for i, reading in enumerate(readings[2:], 2):
        if i % 20 == 0:  # the honest node itself sends an alias it never declared
            _send(node, reading[0], {"alias": 999, "datatype": schema.DOUBLE, "double_value": 1.0})
            sent["sparkplug_unknown_alias"] += 1
        elif i % 20 == 10:  # a text where a number should be
            _send(node, reading[0], {"alias": 1, "datatype": schema.STRING, "string_value": "hot"})
            sent["not_numeric"] += 1
        else:
            if i % 50 == 25:  # a lost message: a sequence gap (still read, rebirth asked)
                node.node.seq += 1
            node.data(*reading)
            honest += 1
    node.wait_acked(30)

    total = 1 + sum(sent.values()) + honest
    stats = agent.wait_stored(total, timeout=120)
    by_reason = stats["dead_letters_by_reason"]
    assert by_reason.pop("sparkplug_no_birth") == 1
    # A data message whose metric has no sensor value yet may fail `missing_sensor` only if
    # the births were lost; none are, so every reason is one the test caused.
    assert by_reason == {k: v for k, v in sent.items() if v}
    assert stats["readings"] == honest
    status = wait_status(upstream.port, "online")
    assert status["heartbeat"]["rss_mib"] < 200
    hostile.disconnect()
    node.close()
    assert agent.stop() == 0


def test_edge_fleet_replay_speaks_sparkplug(broker, start_agent, sim_data, trained):
    """`edge-fleet replay`, as a user runs it, into the agent: by an explicit edge node
    address (metric names = columns), and through the agent's own source entry, whose
    `sensors` give the metrics other names (`Inputs/<sensor>`)."""
    local, upstream = broker("local"), broker("upstream")
    sensors = trained.manifest.sensor_names
    mapping = "".join(f'{s} = "Inputs/{s}"\n' for s in sensors)
    extra = (
        '[[ingest.sources]]\nname = "plain"\ntopic = "spBv1.0/plant/#"\nformat = "sparkplug_b"\n'
        '[[ingest.sources]]\nname = "mapped"\ntopic = "spBv1.0/mapped/#"\n'
        f'format = "sparkplug_b"\n[ingest.sources.sensors]\n{mapping}'
    )
    agent = start_agent(local, upstream, extra=extra)
    wait_status(upstream.port, "online")
    csv, rows = str(sim_data.live_csv), len(readings_from_csv(sim_data.live_csv))
    plain = run_cli(
        "fleet", "replay", csv, "--broker", local.address, "--sparkplug", "plant/line-1/pump-7"
    )
    assert plain.returncode == 0, plain.stderr
    assert f"published {rows} readings as Sparkplug B plant/line-1/pump-7" in plain.stderr
    mapped = run_cli(
        "fleet", "replay", csv, "--broker", local.address, "--asset", "pump-8",
        "--source-config", str(agent.config), "--source", "mapped",
    )  # fmt: skip
    assert mapped.returncode == 0, mapped.stderr
    assert "as Sparkplug B mapped/edge-fleet/pump-8" in mapped.stderr
    stats = agent.wait_stored(2 * rows)
    assert stats["readings"] == 2 * rows and stats["dead_letters"] == 0
    assert agent.stop() == 0


def test_a_restart_reads_the_backlog_queued_while_down(broker, start_agent, sim_data, trained):
    """The births outlive the agent process: the data queued in its session while it was
    stopped is read after the start, not dead-lettered until the node rebirths."""
    local, upstream = broker("local"), broker("upstream")
    sensors = trained.manifest.sensor_names
    agent = start_agent(local, upstream, extra=CONFIG)
    wait_status(upstream.port, "online")
    node = simulated_node(local, sensors)
    readings = _readings(sim_data, sensors)[:300]
    node.data(*readings[0])
    wait_for(lambda: node.rebirths == 1, 30, "a rebirth request")
    for reading in readings[1:100]:
        node.data(*reading)
    agent.wait_stored(100)
    assert agent.stop() == 0
    for reading in readings[100:]:  # queued by the broker for the agent's session
        node.data(*reading)
    node.wait_acked(30)
    agent.start()
    stats = agent.wait_stored(len(readings))
    assert stats["dead_letters_by_reason"] == {"sparkplug_no_birth": 1}
    assert stats["readings"] == len(readings) - 1
    assert node.rebirths == 1
    node.close()
    assert agent.stop() == 0


# Saved decoder states that once crashed the start: nesting past Python's recursion limit, a
# number too large for a float, a sequence number that is infinite.
_DAMAGED = [
    "[" * 100_000,
    '{"v": 1, "nodes": [["plant", "line-1", null, 1, {}, [], {"pump-7": {"x": 1'
    + "0" * 400
    + "}}]]}",
    '{"v": 1, "nodes": [["plant", "line-1", null, 1e400, {}, [], {}]]}',
]


def test_a_damaged_saved_decoder_state_is_no_state(broker, start_agent, sim_data, trained):
    """A decoder state in the database that does not read (damage, a hand edit) is none: the
    agent starts, asks the node for its births and reads it, each time."""
    local, upstream = broker("local"), broker("upstream")
    sensors = trained.manifest.sensor_names
    agent = start_agent(local, upstream, extra=CONFIG)
    wait_status(upstream.port, "online")
    assert agent.stop() == 0
    node = simulated_node(local, sensors)
    readings = iter(_readings(sim_data, sensors))
    for n, kept in enumerate(_DAMAGED, 1):
        with sqlite3.connect(agent.data_dir / "agent.db") as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                ("decoder_state:plc", kept.replace('"x"', f'"{sensors[0]}"')),
            )
        db.close()
        agent.start()
        node.data(*next(readings))  # no birth known: a dead letter and a rebirth request
        wait_for(lambda n=n: node.rebirths == n, 30, "a rebirth request")
        node.data(*next(readings))
        stats = agent.wait_stored(2 * n)
        assert stats["readings"] == n
        assert agent.stop() == 0
    node.close()
