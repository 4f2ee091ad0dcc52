"""The Sparkplug B decode path: the same backlog as the one-reading-per-message drain, sent by
a Sparkplug edge node (one DDATA per reading, every metric by alias), and the decoder alone in
this process."""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.config import IngestConfig, SparkplugConfig
from agent.sparkplug.decoder import Decoder
from agent.sparkplug.edge import EdgeNode
from bench.harness import Models, agent_run, brokers, status_watch, wait_until
from fleet.mqtt import connect

CONFIG = '[[ingest.sources]]\nname = "plc"\ntopic = "spBv1.0/bench/#"\nformat = "sparkplug_b"\n'
_T0_MS = 1_767_225_600_000


def _messages(models: Models, readings: int, sensors: list[str]) -> list[tuple[str, bytes]]:
    from bench.cases import _train_matrix

    data = _train_matrix(models)
    node = EdgeNode("bench", "line-1", sensors)
    out = [node.node_birth(_T0_MS), node.device_birth("pump-1", _T0_MS, list(map(float, data[0])))]
    for i in range(readings):
        values = dict(zip(sensors, map(float, data[i % len(data)]), strict=True))
        out.append(node.device_data("pump-1", _T0_MS + 1000 * (i + 1), values))
    return out


def decode_us(models: Models, readings: int) -> dict[str, float]:
    """µs per DDATA message through the decoder, one thread (protobuf parse, aliases, the
    reading in the model's order)."""
    sensors = models.trained["pca"].manifest.sensor_names
    messages = _messages(models, readings, sensors)
    decoder = Decoder(sensors, SparkplugConfig(), IngestConfig(), [0.0] * len(sensors))
    now = time.time()
    started = time.perf_counter()
    for topic, payload in messages:
        decoder.parse(topic, payload, now)
    seconds = time.perf_counter() - started
    return {"messages": len(messages), "us_per_message": seconds / len(messages) * 1e6}


def drain(
    models: Models, folder: Path, readings: int, core: int | None, repeats: int
) -> dict[str, float]:
    """The run with the median rate of `repeats` (the machine is noisy)."""
    runs = sorted(
        (_drain_once(models, folder / str(n), readings, core) for n in range(repeats)),
        key=lambda r: r["agent_readings_per_s"],
    )
    return runs[len(runs) // 2]


def _drain_once(models: Models, folder: Path, readings: int, core: int | None) -> dict[str, float]:
    """The backlog queued for the agent's session, then the agent started: readings/s until
    all are stored (start-up included, as in `cases.drain`)."""
    local, upstream = brokers(folder)
    try:
        model = models.paths["pca"]
        agent = agent_run(folder / "agent", local, upstream, model, CONFIG, core=core)
        online, close = status_watch(upstream)
        agent.start()
        wait_until(online.is_set, 60, "agent online")  # its persistent session now exists
        agent.stop(timeout=60)
        close()
        sensors = models.trained["pca"].manifest.sensor_names
        client = connect("127.0.0.1", local.port)
        info: mqtt.MQTTMessageInfo | None = None
        for topic, payload in _messages(models, readings, sensors):
            info = client.publish(topic, payload, qos=1)
        assert info is not None
        info.wait_for_publish(600)
        client.disconnect()
        client.loop_stop()
        agent.start()
        wait_until(lambda: agent.stored() >= readings, 600, "the backlog stored", poll=0.005)
        seconds = time.perf_counter() - agent.started_at
        rss = agent.peak_rss_mib()
        agent.stop(timeout=60)
    finally:
        local.stop()
        upstream.stop()
    return {
        "readings": readings,
        "agent_readings_per_s": readings / seconds,
        "agent_seconds": seconds,
        "peak_rss_mib": rss,
    }
