"""The store-and-forward promise, proven with real brokers and the agent as a real process.

Once readings have reached the gateway's broker, the alerts they cause reach the upstream broker
at least once, with the same ids as in an undisturbed run, whatever happens in between; and
each asset's scores and streaming layer (#15) end exactly as in that run.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.model.manifest import Manifest
from agent.model.profile import HOURS
from agent.model.score import Scorer
from agent.model.stream import Stream
from fleet.alerts import AlertSubscriber
from fleet.mqtt import connect
from fleet.replay import publish_payloads, readings_from_csv, replay
from testbed.mosquitto import Mosquitto
from tests.conftest import DEVICE, AgentProcess, fill, launch_agent, wait_for, wait_status
from tests.system.chaos import disturb, settle
from trainer.streaming import DEFAULT_STREAM

ASSETS = ("pump-1", "pump-2")
TAIL = ("tail_quantile", "tail_step", "tail_cap", "tail_climb")


@dataclass(frozen=True)
class Outcome:
    ids: set[str]
    duplicates: int
    stats: dict


@dataclass(frozen=True)
class Scoring:
    """What a stopped agent's database says each asset was scored: its stored scores in time
    order (float32 bytes) and its streaming layer's committed state (`Stream.dump`)."""

    scores: dict[str, bytes]
    streams: dict[str, bytes | None]


def _scoring(agent: AgentProcess) -> Scoring:
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        streams = dict(db.execute("SELECT asset, stream FROM asset_state"))
        scores = {
            asset: b"".join(
                blob
                for (blob,) in db.execute(
                    "SELECT score FROM readings WHERE asset = ? ORDER BY first_ts", (asset,)
                )
            )
            for asset in streams
        }
    return Scoring(scores, streams)


def _topic(asset: str) -> str:
    return f"edge/{DEVICE}/readings/{asset}"


def _settle(agent: AgentProcess, subscriber: AlertSubscriber, messages: int) -> Outcome:
    settle(agent, subscriber, messages)
    return Outcome({a["id"] for a in subscriber.alerts}, subscriber.duplicates, agent.stats())


@pytest.fixture(scope="session")
def readings(sim_data) -> list[dict]:
    return readings_from_csv(sim_data.live_csv)


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory, readings, model_path) -> tuple[Outcome, Scoring]:
    """The same input as the disturbed runs, through an agent that nothing happens to."""
    # What the crashes must not disturb is the layer users run: the default's, tail gate,
    # range novelty and daily profile included (the test model is trained with it).
    manifest = Scorer.load(model_path).manifest
    layer = manifest.stream
    default = {k: getattr(layer, k) for k in ("alert_z", "hold", *TAIL)}
    assert default == {k: DEFAULT_STREAM[k] for k in default}, default
    assert layer.novelty is not None and layer.profile is not None
    folder = tmp_path_factory.mktemp("clean-run")
    local = Mosquitto(folder / "local").start()
    upstream = Mosquitto(folder / "upstream").start()
    agent = launch_agent(folder, local, upstream, model_path)
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    try:
        wait_status(upstream.port, "online")
        for asset in ASSETS:
            replay(readings, "127.0.0.1", local.port, _topic(asset))
        outcome = _settle(agent, subscriber, len(ASSETS) * len(readings))
        assert agent.stop() == 0
        scoring = _scoring(agent)
    finally:
        subscriber.close()
        agent.kill()
        local.stop()
        upstream.stop()
    assert len(outcome.ids) >= 2 * len(ASSETS), "the input must produce alerts on every asset"
    assert set(scoring.streams) == set(ASSETS) and None not in scoring.streams.values()
    _assert_novelty_and_profile_acted(manifest, scoring)
    return outcome, scoring


def _assert_novelty_and_profile_acted(manifest: Manifest, scoring: Scoring) -> None:
    """The parts whose state the crashes must not disturb did work in the clean run: readings
    past the training ranges widened them, and the daily profile learnt hours. Otherwise the
    comparison would hold them only at their starting state."""
    layer, sensors = manifest.stream, len(manifest.sensors)
    assert layer.novelty is not None and layer.profile is not None
    stream = Stream(layer, manifest.window, sensors)
    for asset, saved in scoring.streams.items():
        state = stream.load(saved)
        ranges = state.novelty[-2 * sensors :]  # each sensor's low, then each one's high
        assert ranges != [*layer.novelty.low, *layer.novelty.high], f"{asset}: none widened"
        hours = sum(count > 0 for count in state.profile[:HOURS])
        assert hours > 1, f"{asset}: the profile learnt {hours} hours"
    # The tail gate's release: some likelihood (the main one or the profile's) noted an
    # episode at an alert's onset and released it (its flag back at 0, its mean and gate no
    # longer the new state's), so the comparison holds the release's state, not just its
    # starting one.
    fresh, size = stream.new_state(), stream.profile.state_size
    released = []
    for asset, saved in scoring.streams.items():
        state = stream.load(saved)
        pairs = [(state.episode, fresh.episode)]
        pairs.append((state.profile[size + 6 :], fresh.profile[size + 6 :]))
        released += [asset for episode, start in pairs if episode[0] == 0 and episode != start]
    assert released, "no episode was noted and released"


def test_kill_9_and_broker_restarts_lose_no_alert_and_apply_no_reading_twice(
    broker, start_agent, readings, clean_run
):
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    local = broker("local", persistence=True)
    upstream = broker("upstream", persistence=True)
    subscriber = AlertSubscriber(
        "127.0.0.1", upstream.port, device=DEVICE, client_id="chaos-watch", persistent=True
    )
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    events = rng.sample(["kill", "kill", "kill", "restart local", "restart upstream"], 5)
    with ThreadPoolExecutor(len(ASSETS)) as pool:
        feeds = [
            pool.submit(replay, readings, "127.0.0.1", local.port, _topic(a), rate=250, timeout=300)
            for a in ASSETS
        ]
        agent = disturb(events, rng, agent, lambda: start_agent(local, upstream), local, upstream)
        for feed in feeds:
            feed.result()
    try:
        outcome = _settle(agent, subscriber, len(ASSETS) * len(readings))
    finally:
        subscriber.close()
    context = f"seed {seed} (rerun with CHAOS_SEED={seed}), events {events}, log {agent.log}"
    clean, clean_scoring = clean_run
    assert outcome.ids == clean.ids, context
    assert outcome.stats["readings"] == len(ASSETS) * len(readings), context
    assert outcome.stats["dead_letters"] == 0, f"a reading was applied twice; {context}"
    print(f"chaos: {len(outcome.ids)} alerts, {outcome.duplicates} duplicates upstream; {context}")
    agent.wait_logged("subscribed topic")  # the last restart may still be starting up
    assert agent.stop() == 0
    # The layer is deterministic given its state and inputs, and the graph scores a window the
    # same in any batch: after kill -9 its state resumed from the last commit, or these differ.
    scoring = _scoring(agent)
    assert scoring.scores == clean_scoring.scores, f"scores differ; {context}"
    assert scoring.streams == clean_scoring.streams, f"stream states differ; {context}"


def _malformed(rng: random.Random, reading: dict) -> tuple[bytes, str]:
    """A payload that is rejected wherever it lands in the stream, and its reason."""
    sensor = next(k for k in reading if k != "ts")
    kind = rng.choice(
        ["invalid_json", "binary", "empty", "not_object", "bad_ts", "missing_sensor", "number"]
    )
    if kind == "invalid_json":
        return b'{"ts": 1, ' + os.urandom(8).hex().encode(), kind
    if kind == "binary":
        return b"\xff\xfe" + os.urandom(16), kind
    if kind == "empty":
        return b"", kind
    if kind == "not_object":
        return json.dumps(rng.choice([1, "x", None, True])).encode(), kind
    if kind == "bad_ts":
        return json.dumps({**reading, "ts": "not a time"}).encode(), kind
    if kind == "missing_sensor":
        return json.dumps({k: v for k, v in reading.items() if k != sensor}).encode(), kind
    return json.dumps({**reading, sensor: rng.choice(["high", None, [1]])}).encode(), "not_numeric"


def test_thousands_of_malformed_payloads_change_no_alert(broker, start_agent, readings, clean_run):
    rng = random.Random(7)
    local, upstream = broker("local"), broker("upstream")
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    bad: dict[str, int] = {}
    streams = []
    for asset in ASSETS:
        payloads: list[bytes] = []
        for reading in readings:
            payloads.append(json.dumps(reading).encode())
            for _ in range(rng.randrange(4)):
                payload, reason = _malformed(rng, reading)
                payloads.append(payload)
                bad[reason] = bad.get(reason, 0) + 1
        streams.append((asset, payloads))
    with ThreadPoolExecutor(len(ASSETS)) as pool:
        feeds = [
            pool.submit(publish_payloads, p, "127.0.0.1", local.port, _topic(a), timeout=120)
            for a, p in streams
        ]
        for feed in feeds:
            feed.result()
    total_bad = sum(bad.values())
    try:
        outcome = _settle(agent, subscriber, len(ASSETS) * len(readings) + total_bad)
    finally:
        subscriber.close()
    assert total_bad > 2000
    assert outcome.ids == clean_run[0].ids
    assert outcome.stats["readings"] == len(ASSETS) * len(readings)
    by_reason = outcome.stats["dead_letters_by_reason"]
    assert sum(by_reason.values()) == total_bad
    assert by_reason == bad
    assert agent.stop() == 0
    assert _scoring(agent) == clean_run[1], "garbage between readings changes no score or state"


def test_a_full_disk_holds_readings_at_the_broker_until_space_returns(
    broker, start_agent, readings, clean_run, small_disk
):
    local, upstream = broker("local"), broker("upstream")
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(
        local, upstream, extra="[forward]\nstatus_interval_s = 0.5\n", data_dir=small_disk
    )
    wait_status(upstream.port, "online")
    ballast = fill(small_disk)
    for asset in ASSETS:
        replay(readings, "127.0.0.1", local.port, _topic(asset))
    wait_status(upstream.port, "online", where=lambda s: s["storage"] == "failing")
    assert agent.process.poll() is None, "the agent keeps running on a full disk"
    ballast.unlink()
    wait_status(upstream.port, "online", where=lambda s: s["storage"] == "ok")
    try:
        outcome = _settle_on_disk(agent, subscriber, len(ASSETS) * len(readings), small_disk)
    finally:
        subscriber.close()
    assert outcome.ids == clean_run[0].ids, "a full disk cost no alert"
    assert agent.stop() == 0


def test_storage_failing_past_the_keepalive_costs_the_connection_but_no_reading(
    broker, start_agent, readings, clean_run, small_disk
):
    """While commits fail the pipeline takes nothing: the inbox fills (here its 2 KiB, twice
    `batch_max_bytes`, before the broker's 50 unacknowledged messages), the MQTT thread waits and
    sends no pings, and past 1.5 x keepalive the broker drops the connection. Once space returns
    the agent reconnects and what it held, never acknowledged, comes again and is applied once."""
    local, upstream = broker("local"), broker("upstream")
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(
        local,
        upstream,
        extra="[forward]\nstatus_interval_s = 0.5\n[scoring]\nbatch_max_bytes = 1024\n",
        data_dir=small_disk,
        local_keys="keepalive = 5\nreceive_maximum = 50\n",
    )
    wait_status(upstream.port, "online")
    ballast = fill(small_disk)
    for asset in ASSETS:
        replay(readings, "127.0.0.1", local.port, _topic(asset))
    wait_status(upstream.port, "online", where=lambda s: s["storage"] == "failing")
    broker_log = local.workdir / "mosquitto.log"
    wait_for(
        lambda: "exceeded timeout" in broker_log.read_text(errors="replace"),
        30,
        f"the broker to drop the waiting agent; {broker_log}",
    )
    ballast.unlink()
    try:
        outcome = _settle_on_disk(agent, subscriber, len(ASSETS) * len(readings), small_disk)
    finally:
        subscriber.close()
    assert outcome.ids == clean_run[0].ids, "no alert lost or changed"
    assert agent.logged("local connected session_present=True") >= 1, "it reconnected"
    assert agent.stop() == 0


def _settle_on_disk(
    agent: AgentProcess, subscriber: AlertSubscriber, total: int, disk: Path
) -> Outcome:
    """Like _settle, but readings shed or evicted for space count as applied."""

    def applied() -> int:
        s = agent.stats()
        ev = s.get("evictions_by_reason", {})
        return s and s["readings"] + ev.get("readings", 0) + ev.get("shed_readings", 0)

    try:
        wait_for(lambda: applied() >= total, 120, f"{total} readings applied; {agent.log}")
    except AssertionError as exc:
        files = {p.name: p.stat().st_size for p in disk.iterdir()}
        raise AssertionError(f"{exc}; on the disk: {files}") from exc
    assert applied() == total
    return _settle(agent, subscriber, 0)


def test_expired_alerts_are_counted_and_never_sent(broker, start_agent, readings, tmp_path: Path):
    local = broker("local")
    upstream = Mosquitto(tmp_path / "upstream-later")  # down while the alerts expire
    agent = start_agent(local, upstream, extra="[forward]\nalert_ttl_s = 1\n")
    wait_for(lambda: agent.logged("subscribed topic"), 30, "the agent consuming")
    replay(readings, "127.0.0.1", local.port, _topic("pump-1"))
    expired = wait_for(
        lambda: (
            (s := agent.stats())
            and s["readings"] == len(readings)
            and s["alerts_pending"] == 0
            and s["alerts_expired"]
        ),
        30,
        "every alert expired",
    )
    received: list[tuple[dict, object]] = []
    try:
        upstream.start()
        watcher = connect(
            "127.0.0.1",
            upstream.port,
            subscribe=f"edge/{DEVICE}/alerts/#",
            on_message=lambda _c, _u, m: received.append((json.loads(m.payload), m.properties)),
        )
        status = wait_status(upstream.port, "online")
        assert status["buffer"]["alerts_expired"] == expired
        replay(readings, "127.0.0.1", local.port, _topic("pump-9"))
        wait_for(lambda: agent.stats()["alerts_delivered"] >= 2, 30, "fresh alerts delivered")
        delivered = agent.stats()["alerts_delivered"]
        wait_for(lambda: len(received) >= delivered, 30, "fresh alerts received")
        watcher.disconnect()
        watcher.loop_stop()
    finally:
        upstream.stop()
    assert {alert["asset"] for alert, _ in received} == {"pump-9"}, "expired alerts never sent"
    assert all(props.MessageExpiryInterval == 1 for _, props in received)
    assert agent.stop() == 0
