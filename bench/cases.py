"""The benchmark's measurements, one function each; every one returns plain numbers.

Rates are taken within one run against a reference measured the same way (the bare paho
subscriber, scikit-learn in the same process), because this machine is noisy.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from agent.model.score import Scorer
from agent.model.stream import Stream
from agent.model.table import read_table
from bench.adaptation import START
from bench.harness import DEVICE, ROOT, Models, agent_run, brokers, status_watch, wait_until
from fleet.mqtt import connect
from fleet.replay import publish_messages, publish_payloads

READINGS = f"edge/{DEVICE}/readings/pump-1"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "n": len(ordered),
    }


def _train_matrix(models: Models) -> np.ndarray:
    table = read_table(models.train_csv)
    return table.matrix(table.sensor_columns())


def score_latency(models: Models, calls: int) -> dict[str, dict[str, float]]:
    """µs to score one window, one thread, per shipped algorithm."""
    data = _train_matrix(models).astype(np.float32)
    out = {}
    for algorithm, path in models.paths.items():
        scorer = Scorer.load(path)
        w = scorer.manifest.window
        windows = [data[i : i + w][None] for i in range(calls)]
        for window in windows[:200]:
            scorer.score(window)
        times = []
        for window in windows:
            t = time.perf_counter_ns()
            scorer.score(window)
            times.append((time.perf_counter_ns() - t) / 1000)
        out[algorithm] = _percentiles(times)
    return out


def stream_cost(models: Models, calls: int) -> dict[str, dict[str, float]]:
    """µs per reading of the streaming layer over the graph's score (#15: at most 5), per
    shipped model: one window at a time, as the pipeline treats a live reading (the step and
    the dump committed with the batch; median, p99), and `batched` in blocks of 512, as a
    backlog drains; and `drift_us`, one drift figure (the runtime takes one per moving asset
    per second, not per reading). The graph's scores are taken first: only the layer is timed.
    Each window goes with its newest reading's time (a reading a second), as in the pipeline:
    without times the layer leaves the daily profile out."""
    data = _train_matrix(models).astype(np.float32)
    out = {}
    for algorithm, path in models.paths.items():
        scorer = Scorer.load(path)
        manifest = scorer.manifest
        w = manifest.window
        windows = np.lib.stride_tricks.sliding_window_view(data[: calls + w - 1], w, axis=0)
        windows = np.ascontiguousarray(windows.transpose(0, 2, 1))
        raw = scorer.score_many(windows).score
        times = START + (w - 1) + np.arange(len(raw), dtype=np.float64)
        stream = Stream(manifest.stream, w, len(manifest.sensors))
        ones = [(raw[i : i + 1], windows[i : i + 1], times[i : i + 1]) for i in range(len(raw))]
        warm = stream.new_state()
        for one in ones[:200]:
            stream.step(warm, *one)
            stream.dump(warm)
        state, times, drifts = stream.new_state(), [], []
        for one in ones:
            t = time.perf_counter_ns()
            stream.step(state, *one)
            stream.dump(state)
            times.append((time.perf_counter_ns() - t) / 1000)
            t = time.perf_counter_ns()
            stream.drift(state)
            drifts.append((time.perf_counter_ns() - t) / 1000)
        state = stream.new_state()
        t = time.perf_counter_ns()
        for i in range(0, len(raw), 512):
            stream.step(state, raw[i : i + 512], windows[i : i + 512], times[i : i + 512])
            stream.dump(state)
        batched = (time.perf_counter_ns() - t) / 1000 / len(raw)
        drift_us = statistics.median(drifts)
        out[algorithm] = {**_percentiles(times), "batched": batched, "drift_us": drift_us}
    return out


def sklearn_baseline(models: Models, calls: int) -> dict[str, float]:
    """What the tutorials start from: IsolationForest.score_samples on one reading at a time."""
    from sklearn.ensemble import IsolationForest

    data = _train_matrix(models)
    forest = IsolationForest(random_state=0).fit(data)
    for row in data[:20]:
        forest.score_samples(row[None])
    times = []
    for row in data[:calls]:
        t = time.perf_counter_ns()
        forest.score_samples(row[None])
        times.append((time.perf_counter_ns() - t) / 1000)
    return _percentiles(times)


def _reading(i: int, values: np.ndarray) -> dict[str, object]:
    row = values[i % len(values)]
    return {"ts": 1_767_225_600 + i, **{f"s{j}": float(v) for j, v in enumerate(row)}}


def _payloads(models: Models, readings: int, per_message: int, sensors: list[str]) -> list[str]:
    data = _train_matrix(models)
    out = []
    for start in range(0, readings, per_message):
        chunk = []
        for i in range(start, start + per_message):
            row = data[i % len(data)]
            values = dict(zip(sensors, map(float, row), strict=True))
            chunk.append({"ts": 1_767_225_600 + i, **values})
        out.append(json.dumps(chunk[0] if per_message == 1 else chunk))
    return out


def drain(
    models: Models, folder: Path, readings: int, per_message: int, core: int | None
) -> dict[str, float]:
    """A backlog queued for the agent's session, then the agent started: readings/s until all
    are stored; beside it the bare paho ceiling on the same queued messages."""
    algorithm = "pca"
    local, upstream = brokers(folder)
    try:
        agent = agent_run(folder / "agent", local, upstream, models.paths[algorithm], core=core)
        online, close = status_watch(upstream)
        agent.start()
        wait_until(online.is_set, 60, "agent online")  # its persistent session now exists
        agent.stop(timeout=60)
        close()
        _ceiling_session(local.port)
        sensors = models.trained[algorithm].manifest.sensor_names
        payloads = _payloads(models, readings, per_message, sensors)
        publish_payloads(payloads, "127.0.0.1", local.port, READINGS, timeout=600)
        agent.start()
        wait_until(lambda: agent.stored() >= readings, 600, "the backlog stored", poll=0.005)
        agent_s = time.perf_counter() - agent.started_at
        rss = agent.peak_rss_mib()
        agent.stop(timeout=60)
        ceiling_s = _ceiling(local.port, len(payloads), core)
        db_bytes = _bytes_per_reading(agent.data_dir / "agent.db", readings)
    finally:
        local.stop()
        upstream.stop()
    # Both from process start to the last message: start-up is part of draining a backlog.
    agent_rate = readings / agent_s
    ceiling_rate = readings / ceiling_s
    return {
        "readings": readings,
        "readings_per_message": per_message,
        "agent_readings_per_s": agent_rate,
        "agent_seconds": agent_s,
        "ceiling_seconds": ceiling_s,
        "ceiling_readings_per_s": ceiling_rate,
        "ratio": agent_rate / ceiling_rate,
        "peak_rss_mib": rss,
        "sqlite_bytes_per_reading": db_bytes,
    }


# The configured sources measured beside our own JSON (agent.sources): Tasmota-style nested
# fields with a naive local time, and one bare number per sensor topic (stamped on receipt,
# joined per asset).
SOURCE_CASES = {
    "json_paths": """
[[ingest.sources]]
name = "tasmota"
topic = "tele/{asset}/SENSOR"
ts_field = "Time"
sensors = { %(paths)s }
[ingest.sources.timestamps]
zone = "Europe/Berlin"
""",
    "value_per_topic": """
[[ingest.sources]]
name = "plant"
topic = "plant/{asset}/{sensor}"
format = "value"
""",
}


def _source_messages(
    models: Models, kind: str, readings: int, sensors: list[str]
) -> list[tuple[str, str]]:
    data = _train_matrix(models)
    out: list[tuple[str, str]] = []
    for i in range(readings):
        values = dict(zip(sensors, map(float, data[i % len(data)]), strict=True))
        if kind == "json_paths":
            moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_767_225_600 + i))
            out.append(("tele/pump-1/SENSOR", json.dumps({"Time": moment, "ENERGY": values})))
        else:
            out += [(f"plant/pump-1/{name}", repr(v)) for name, v in values.items()]
    return out


def drain_source(
    models: Models, folder: Path, readings: int, kind: str, core: int | None
) -> dict[str, float]:
    """As `drain`, for a configured source (`SOURCE_CASES`): the backlog queued, then the agent
    started; readings/s and messages/s until all are stored (no ceiling: the bare subscriber
    reads our topic only)."""
    algorithm = "pca"
    sensors = models.trained[algorithm].manifest.sensor_names
    extra = SOURCE_CASES[kind] % {"paths": ", ".join(f'{s} = "ENERGY.{s}"' for s in sensors)}
    local, upstream = brokers(folder)
    try:
        agent = agent_run(
            folder / "agent", local, upstream, models.paths[algorithm], extra, core=core
        )
        online, close = status_watch(upstream)
        agent.start()
        wait_until(online.is_set, 60, "agent online")
        agent.stop(timeout=60)
        close()
        messages = _source_messages(models, kind, readings, sensors)
        publish_messages(messages, "127.0.0.1", local.port, timeout=600)
        agent.start()
        wait_until(lambda: agent.stored() >= readings, 600, "the backlog stored", poll=0.005)
        agent_s = time.perf_counter() - agent.started_at
        rss = agent.peak_rss_mib()
        agent.stop(timeout=60)
    finally:
        local.stop()
        upstream.stop()
    return {
        "readings": readings,
        "messages": len(messages),
        "agent_readings_per_s": readings / agent_s,
        "agent_messages_per_s": len(messages) / agent_s,
        "agent_seconds": agent_s,
        "peak_rss_mib": rss,
    }


_CEILING_ID = "bench-ceiling"


def _ceiling_session(port: int) -> None:
    client = connect("127.0.0.1", port, _CEILING_ID, clean_start=False, subscribe=READINGS)
    client.disconnect()
    client.loop_stop()


def _ceiling(port: int, messages: int, core: int | None) -> float:
    """Seconds from starting the bare subscriber to its last message."""
    command = [sys.executable, "-m", "bench.ceiling", str(port), _CEILING_ID, READINGS]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, str(messages)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # printed at the last message
    seconds = time.perf_counter() - started
    if process.wait(timeout=60) != 0 or not line:
        raise RuntimeError("the ceiling subscriber did not receive every message")
    return seconds


def _bytes_per_reading(db: Path, readings: int) -> float:
    import sqlite3

    with sqlite3.connect(db) as conn:
        pages, free, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        )
    return (pages - free) * size / readings


def alert_latency(
    models: Models, folder: Path, rate: float, seconds: float, core: int | None
) -> dict[str, float]:
    """Reading-to-alert at the upstream broker: a spike every 100 readings fires an alert."""
    algorithm = "pca"
    manifest = models.trained[algorithm].manifest
    local, upstream = brokers(folder)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def on_alert(_c: object, _u: object, msg: object) -> None:
        at = time.perf_counter()
        alert = json.loads(msg.payload)
        if alert["state"] == "firing":
            with lock:
                if alert["ts"] in sent:
                    latencies.append((at - sent[alert["ts"]]) * 1000)

    try:
        extra = "[alerts]\nfire_after = 1\nresolve_after = 3\n"
        agent = agent_run(folder / "agent", local, upstream, models.paths[algorithm], extra, core)
        online, close = status_watch(upstream)
        agent.start()
        wait_until(online.is_set, 60, "agent online")
        close()
        watcher = connect(
            "127.0.0.1", upstream.port, subscribe=f"edge/{DEVICE}/alerts/#", on_message=on_alert
        )
        _publish_with_spikes(models, local.port, manifest, rate, seconds, sent, lock)
        wait_until(lambda: agent.stored() >= int(rate * seconds), 60, "all readings stored")
        time.sleep(1.0)  # alerts in flight after the last reading
        watcher.disconnect()
        watcher.loop_stop()
        agent.stop(timeout=60)
    finally:
        local.stop()
        upstream.stop()
    return {"offered_readings_per_s": rate, **_percentiles(latencies)}


def _publish_with_spikes(
    models: Models,
    port: int,
    manifest: object,
    rate: float,
    seconds: float,
    sent: dict[str, float],
    lock: threading.Lock,
) -> None:
    from datetime import UTC, datetime

    data = _train_matrix(models)
    spike = data.mean(axis=0) + 30 * data.std(axis=0)
    names = manifest.sensor_names
    client = connect("127.0.0.1", port)
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        row = spike if i % 100 == 99 else data[i % len(data)]
        ts = 1_767_225_600 + i
        iso = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
        payload = json.dumps({"ts": ts, **dict(zip(names, map(float, row), strict=True))})
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with lock:
            sent[iso.replace("+00:00", "Z")] = time.perf_counter()
        client.publish(READINGS, payload, qos=1)
    client.disconnect()
    client.loop_stop()


def startup(models: Models, folder: Path, runs: int, core: int | None) -> dict[str, float]:
    """Seconds from process start to the retained `online` status upstream; and the peak RSS
    by then (the agent idle, before any reading)."""
    local, upstream = brokers(folder)
    times, rss = [], []
    try:
        for n in range(runs):
            agent = agent_run(
                folder / f"agent-{n}", local, upstream, models.paths["pca"], core=core
            )
            online, close = status_watch(upstream)
            agent.start()
            wait_until(online.is_set, 60, "agent online", poll=0.001)
            times.append(time.perf_counter() - agent.started_at)
            rss.append(agent.peak_rss_mib())
            close()
            agent.stop(timeout=60)
    finally:
        local.stop()
        upstream.stop()
    return {**_percentiles(times), "idle_rss_mib": statistics.median(rss)}


def dependency_floor(models: Models) -> float:
    """Peak RSS (MiB) of the agent's third-party imports plus one session of its model."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.floor", str(models.paths["pca"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout)["peak_rss_mib"])
