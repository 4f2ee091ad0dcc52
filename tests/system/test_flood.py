"""Hostile fleet topics (issue #13): anyone who can publish on the upstream broker, without any
key, must not exhaust the agent's memory, starve its pipeline or flood its log, and signed
pushes still apply. Real brokers, the agent as a process, its peak memory from /proc (VmHWM).
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

from agent.envelope import MAX_CHUNK_BYTES, load_private_key, seal
from fleet.mqtt import connect
from fleet.push import push_topic
from fleet.replay import readings_from_csv, replay
from testbed.mosquitto import Mosquitto
from tests.conftest import SimData, run_cli, wait_status
from tests.system.pushing import GROUP, last_push, push_cli

# The fixtures of the push tests, shared.

# The outside check; an agent that takes no junk peaks near 90 MiB.
PEAK_MIB = 160


def _publish(upstream: Mosquitto, messages: list[tuple[str, bytes]], retain: bool = True) -> None:
    client = connect("127.0.0.1", upstream.port)
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(60)
    finally:
        client.disconnect()
        client.loop_stop()


def _junk_chunk(index: int, size: int) -> bytes:
    """A chunk in the right format for a push nobody signed."""
    data = base64.b64encode(bytes([index % 256]) * size).decode()
    return json.dumps({"sha256": "0" * 64, "index": index, "data": data}).encode()


def _streams(device: str) -> list[str]:
    targets = (f"device:{device}", f"group:{GROUP}")
    return [push_topic("edge", target, kind) for target in targets for kind in ("config", "model")]


def _store_readings(agent, local: Mosquitto, device: str, sim_data: SimData, rows: slice) -> None:
    readings = readings_from_csv(sim_data.live_csv)[rows]
    replay(readings, "127.0.0.1", local.port, f"edge/{device}/readings/pump-1")
    agent.wait_stored(rows.stop)


def test_retained_junk_chunks_on_every_stream_hold_no_memory(
    broker, fleet_agent, keys, sim_data: SimData, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    # 48 junk chunks of 1 MiB retained on each of the device's and its group's four streams.
    junk = [
        (f"{stream}/chunk/{i}", _junk_chunk(i, 1024 * 1024))
        for stream in _streams("gw-j")
        for i in range(48)
    ]
    _publish(upstream, junk)
    del junk
    agent = fleet_agent(local, upstream, "gw-j")
    wait_status(upstream.port, "online", device="gw-j")
    # A signed config in chunks still applies, its chunks retained among the junk.
    overlay = tmp_path / "overlay.toml"
    overlay.write_text("[alerts]\nfire_after = 5\n" + "#" * 300 + "\n")
    push_cli(upstream, "config", overlay, keys[0], "--device", "gw-j", version=5, chunk_size=100)
    last_push(upstream, "gw-j", "applied", 5)
    _store_readings(agent, local, "gw-j", sim_data, slice(0, 100))
    assert agent.peak_rss_mib() <= PEAK_MIB
    # The junk is still retained: a restart takes none of it either.
    assert agent.stop() == 0
    agent = fleet_agent(local, upstream, "gw-j")
    wait_status(upstream.port, "online", device="gw-j", where=lambda s: s["config_version"] == 5)
    _store_readings(agent, local, "gw-j", sim_data, slice(100, 200))
    assert agent.peak_rss_mib() <= PEAK_MIB
    assert agent.stop() == 0


def test_a_huge_retained_message_is_never_read(
    broker, fleet_agent, keys, sim_data: SimData, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    huge = b"x" * (140 * 1000 * 1000)
    device, group = _streams("gw-h")[1], _streams("gw-h")[2]
    # On a chunk topic (no envelope wants it) and on an envelope topic (over the packet size).
    _publish(upstream, [(f"{device}/chunk/0", huge), (group, huge)])
    del huge
    agent = fleet_agent(local, upstream, "gw-h")
    wait_status(upstream.port, "online", device="gw-h")
    overlay = tmp_path / "overlay.toml"
    overlay.write_text("[alerts]\nfire_after = 5\n")
    push_cli(upstream, "config", overlay, keys[0], "--device", "gw-h", version=3)
    last_push(upstream, "gw-h", "applied", 3)
    _store_readings(agent, local, "gw-h", sim_data, slice(0, 100))
    assert agent.peak_rss_mib() <= PEAK_MIB
    assert agent.stop() == 0


def test_a_flood_of_unsigned_pushes_neither_bloats_nor_starves_the_agent(
    broker, fleet_agent, keys, sim_data: SimData, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, "gw-f")
    wait_status(upstream.port, "online", device="gw-f")
    topic = push_topic("edge", "device:gw-f", "config")
    junk = json.dumps({"kind": "config", "data": "x" * 20_000}).encode()
    key = load_private_key(keys[0])
    envelope, _ = seal(key, "config", "device:gw-f", 8, b"[alerts]\nfire_after = 5\n")

    def flood() -> None:
        """20,000 unsigned messages, a signed push retained in the middle of them."""
        client = connect("127.0.0.1", upstream.port)
        try:
            for n in range(20_000):
                client.publish(topic, junk, qos=0)
                if n == 10_000:
                    client.publish(topic, json.dumps(envelope).encode(), qos=1, retain=True)
            client.publish(topic, junk, qos=1).wait_for_publish(120)
        finally:
            client.disconnect()
            client.loop_stop()

    flooding = threading.Thread(target=flood)
    flooding.start()
    try:
        _store_readings(agent, local, "gw-f", sim_data, slice(0, 200))
    finally:
        flooding.join()
    # The signed push applies, even if the full queue dropped it: it is retained and the agent
    # asks for the retained pushes again once the queue has room.
    wait_status(upstream.port, "online", device="gw-f", where=lambda s: s["config_version"] == 8)
    _store_readings(agent, local, "gw-f", sim_data, slice(200, 300))
    assert agent.peak_rss_mib() <= PEAK_MIB
    rejected = agent.logged("rejected: unsigned push")
    assert 1 <= rejected <= 20, f"{rejected} warnings: one per 10 s, not one per message"
    assert agent.stop() == 0


def test_a_push_whose_chunks_never_come_is_reported_incomplete(broker, fleet_agent, keys):
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, "gw-i", fleet="chunk_timeout_s = 2\n")
    wait_status(upstream.port, "online", device="gw-i")
    key = load_private_key(keys[0])
    content = b"[alerts]\nfire_after = 5\n" + b"#" * 300 + b"\n"
    envelope, chunks = seal(key, "config", "device:gw-i", 4, content, chunk_bytes=100)
    topic = push_topic("edge", "device:gw-i", "config")
    # The envelope and one of its four chunks: the rest never come.
    first = {"sha256": envelope["sha256"], "index": 0, "data": base64.b64encode(chunks[0]).decode()}
    _publish(upstream, [(f"{topic}/chunk/0", json.dumps(first).encode())])
    _publish(upstream, [(topic, json.dumps(envelope).encode())])
    status = last_push(upstream, "gw-i", "incomplete", 4, reason="1 of 4 chunks came")
    assert status["config_version"] == 0, "nothing was applied"
    assert agent.process.poll() is None
    assert agent.stop() == 0


def test_the_largest_messages_edge_fleet_sends_pass_the_packet_size_limit(
    broker, fleet_agent, keys, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    fleet_agent(local, upstream, "gw-l")
    wait_status(upstream.port, "online", device="gw-l")
    # 600 KiB: two full chunks of the default (and largest) size and a bit.
    overlay = tmp_path / "overlay.toml"
    overlay.write_text("[alerts]\nfire_after = 5\n" + ("#" * 1023 + "\n") * 600)
    sent = push_cli(upstream, "config", overlay, keys[0], "--device", "gw-l", version=6)
    assert sent["chunks"] == 3
    last_push(upstream, "gw-l", "applied", 6)
    too_big = run_cli(
        *("fleet", "push-config", str(overlay), "--device", "gw-l", "--key", str(keys[0])),
        *("--broker", upstream.address, "--chunk-size", str(MAX_CHUNK_BYTES + 1)),
    )
    assert too_big.returncode == 2 and "chunk size must be 1 to 262144" in too_big.stderr
