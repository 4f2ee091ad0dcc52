"""Each asset's streaming layer (#15) across restarts and model switches, with the agent as a
process between real brokers, on real SQLite files: a saved state that does not load starts
afresh (counted, logged) and the asset keeps being scored; a switch to a model with the same
graph but other stream parameters starts every layer anew and keeps the windows."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.model.score import Scorer
from agent.model.stream import Stream, StreamStateError
from fleet.mqtt import connect
from fleet.replay import readings_from_csv
from testbed.mosquitto import free_port
from tests.conftest import DEVICE, AgentProcess, wait_status
from tests.manifests import with_stream

TOPIC = f"edge/{DEVICE}/readings/pump-1"


def _publish(port: int, readings: list[dict]) -> None:
    """Publish at QoS 1 in order; return once the broker has them all."""
    client = connect("127.0.0.1", port)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *_: acked.release()
    try:
        for reading in readings:
            client.publish(TOPIC, json.dumps(reading), qos=1)
        for _ in readings:
            assert acked.acquire(timeout=60), "the broker acknowledged every reading"
    finally:
        client.disconnect()
        client.loop_stop()


def _asset_state(agent: AgentProcess) -> tuple[int, bytes | None]:
    """pump-1's windows scored (stored scores that are numbers) and its saved stream state."""
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        blobs = db.execute("SELECT score FROM readings WHERE asset = 'pump-1'").fetchall()
        (stream,) = db.execute("SELECT stream FROM asset_state WHERE asset = 'pump-1'").fetchone()
    return sum(v == v for (blob,) in blobs for v in memoryview(blob).cast("f")), stream


def _layer(model: Path) -> Stream:
    manifest = Scorer.load(model).manifest
    return Stream(manifest.stream, manifest.window, len(manifest.sensors))


def _replaced_metric(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "edge_agent_stream_states_replaced_total":
                return sample.value
    raise AssertionError("no edge_agent_stream_states_replaced_total")


def test_a_saved_stream_state_that_does_not_load_starts_afresh_and_the_asset_scores_on(
    broker, start_agent, sim_data, model_path
):
    local, upstream = broker("local"), broker("upstream")
    readings = readings_from_csv(sim_data.live_csv)[:40]
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    _publish(local.port, readings[:30])
    agent.wait_stored(30)
    assert agent.stop() == 0
    assert _layer(model_path).load(_asset_state(agent)[1]) is not None
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        db.execute("UPDATE asset_state SET stream = x'00ff00' WHERE asset = 'pump-1'")

    port = free_port()
    agent = start_agent(local, upstream, extra=f'[metrics]\nlisten = "{port}"\n')
    status = wait_status(upstream.port, "online")
    agent.wait_logged("1 saved stream states did not load and start afresh (pump-1)")
    assert status["drift"] == {"level": 0.5, "assets": 0, "above": 0, "most": []}
    assert _replaced_metric(port) == 1
    _publish(local.port, readings[30:40])
    stats = agent.wait_stored(40)
    assert stats["readings"] == 40 and stats["dead_letters"] == 0, stats
    assert agent.stop() == 0
    scored, stream = _asset_state(agent)
    assert scored == 40 - 10 + 1, "the window carried on, every reading scored"
    assert _layer(model_path).load(stream) is not None, "a loadable state was committed again"


def _with_other_stream_params(model: Path, out: Path) -> Path:
    """The same graph, re-exported with other stream parameters in its manifest (a retuned
    layer): `reference_quantiles` is one of StreamParams' fields since #15."""
    with_stream(model, out, reference_quantiles=[0.0, 0.5, 1.0])
    assert Scorer.load(out).manifest.graph_sha256 == Scorer.load(model).manifest.graph_sha256
    return out


def test_a_switch_to_other_stream_parameters_starts_each_layer_anew_and_keeps_the_windows(
    broker, start_agent, sim_data, model_path, tmp_path: Path
):
    """SIGHUP after the model file was replaced by one with the same graph and other stream
    parameters: before, the reload compared only the graph and said "unchanged"."""
    local, upstream = broker("local"), broker("upstream")
    model = shutil.copy(model_path, tmp_path / "model.onnx")
    readings = readings_from_csv(sim_data.live_csv)[:40]
    agent = start_agent(local, upstream, model=model)
    wait_status(upstream.port, "online")
    _publish(local.port, readings[:30])
    agent.wait_stored(30)
    _with_other_stream_params(model_path, tmp_path / "retuned.onnx").replace(model)
    agent.process.send_signal(signal.SIGHUP)
    agent.wait_logged("the model's streaming layer changed since the last run")
    assert agent.logged("it starts afresh for 1 assets (windows and episodes carry on)")
    _publish(local.port, readings[30:40])
    assert agent.wait_stored(40)["dead_letters"] == 0
    assert agent.stop() == 0
    scored, stream = _asset_state(agent)
    assert scored == 40 - 10 + 1, "the window carried on across the switch"
    assert _layer(model).load(stream) is not None


def _with_climb(model: Path, out: Path, climb: int) -> Path:
    """The same graph with the tail gate's release at `climb` windows (0: off, state format 4;
    else format 5)."""
    assert Scorer.load(model).manifest.stream.tail_quantile > 0, "premise: the model has the gate"
    return with_stream(model, out, tail_climb=climb)


@pytest.mark.parametrize(("before", "after"), [(0, 30), (30, 0)])
def test_a_restart_onto_a_model_with_or_without_the_release_starts_each_layer_anew(
    broker, start_agent, sim_data, model_path, tmp_path: Path, before: int, after: int
):
    """An agent stopped, its model replaced by the same graph with the tail gate's release
    switched on (a state of format 4 saved, a layer of format 5 loading) or off, and started:
    it says each asset's layer starts afresh, scores on with its windows, and commits a state
    the new layer loads."""
    local, upstream = broker("local"), broker("upstream")
    model = _with_climb(model_path, tmp_path / "model.onnx", before)
    readings = readings_from_csv(sim_data.live_csv)[:40]
    agent = start_agent(local, upstream, model=model)
    wait_status(upstream.port, "online")
    _publish(local.port, readings[:30])
    agent.wait_stored(30)
    assert agent.stop() == 0
    saved = _asset_state(agent)[1]
    assert saved is not None and _layer(model).load(saved) is not None
    _with_climb(model_path, tmp_path / "next.onnx", after).replace(model)
    with pytest.raises(StreamStateError, match="stream state"):  # its size, another layout
        _layer(model).load(saved)

    agent = start_agent(local, upstream, model=model)
    wait_status(upstream.port, "online")
    agent.wait_logged("the model's streaming layer changed since the last run")
    assert agent.logged("it starts afresh for 1 assets (windows and episodes carry on)")
    _publish(local.port, readings[30:40])
    assert agent.wait_stored(40)["dead_letters"] == 0
    assert agent.stop() == 0
    scored, stream = _asset_state(agent)
    assert scored == 40 - 10 + 1, "the window carried on across the restart"
    assert len(_layer(model).load(stream).episode) == (3 if after else 0), "the new layout"
