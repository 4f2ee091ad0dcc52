"""The chaos no-loss test (tests/system/test_no_loss.py) with readings sent one sensor per
message (joined by the agent) and with readings stamped on receipt: kill -9 and broker restarts
lose nothing and apply nothing twice."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import SourceConfig
from fleet.alerts import AlertSubscriber
from fleet.replay import publish_messages, readings_from_csv
from fleet.sources import encode
from testbed.mosquitto import Mosquitto
from tests.conftest import DEVICE, AgentProcess, launch_agent, wait_status
from tests.system.chaos import disturb, settle

ASSETS = ("pump-1", "pump-2")
PER_SENSOR = SourceConfig.model_validate(
    {
        "name": "plant",
        "topic": "plant/{asset}/{sensor}",
        "format": "value",
        "timestamps": {"policy": "payload_else_received"},
    }
)
PER_SENSOR_TOML = """
[[ingest.sources]]
name = "plant"
topic = "plant/{asset}/{sensor}"
format = "value"
[ingest.sources.timestamps]
policy = "payload_else_received"
"""
ON_RECEIPT_TOML = '[ingest.timestamps]\npolicy = "received"\n'


@dataclass(frozen=True)
class Outcome:
    alerts: dict[str, list[dict]]  # by asset, in the order sent
    stats: dict

    @property
    def ids(self) -> set[str]:
        return {a["id"] for alerts in self.alerts.values() for a in alerts}

    def episodes(self) -> dict[str, list[tuple]]:
        """Each asset's alerts without their times and ids (what receipt times change)."""
        return {
            asset: [(a["state"], a["level"], a["score"]) for a in alerts]
            for asset, alerts in self.alerts.items()
        }


@pytest.fixture(scope="module")
def readings(sim_data) -> list[dict]:
    return readings_from_csv(sim_data.live_csv)


def _messages(kind: str, readings: list[dict], asset: str) -> list[tuple[str, bytes]]:
    if kind == "per_sensor":
        return encode(PER_SENSOR, asset, readings)
    # Our own JSON without `ts` (the agent stamps it on receipt).
    own = SourceConfig.model_validate(
        {
            "name": "own",
            "topic": f"edge/{DEVICE}/readings/{asset}",
            "asset": asset,
            "timestamps": {"policy": "received"},
        }
    )
    return encode(own, asset, readings)


def _config(kind: str) -> str:
    return PER_SENSOR_TOML if kind == "per_sensor" else ON_RECEIPT_TOML


def _settle(agent: AgentProcess, subscriber: AlertSubscriber, readings: int) -> Outcome:
    settle(agent, subscriber, readings)
    by_asset: dict[str, list[dict]] = {}
    for alert in subscriber.alerts:
        by_asset.setdefault(alert["asset"], []).append(alert)
    return Outcome(by_asset, agent.stats())


def _undisturbed(kind: str, folder: Path, readings: list[dict], model_path: Path) -> Outcome:
    local = Mosquitto(folder / "local").start()
    upstream = Mosquitto(folder / "upstream").start()
    agent = launch_agent(folder, local, upstream, model_path, _config(kind))
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    try:
        wait_status(upstream.port, "online")
        for asset in ASSETS:
            publish_messages(_messages(kind, readings, asset), "127.0.0.1", local.port)
        outcome = _settle(agent, subscriber, len(ASSETS) * len(readings))
        assert agent.stop() == 0
    finally:
        subscriber.close()
        agent.kill()
        local.stop()
        upstream.stop()
    assert len(outcome.ids) >= 2 * len(ASSETS), "the input must produce alerts on every asset"
    return outcome


@pytest.mark.parametrize("kind", ["per_sensor", "on_receipt"])
def test_kill_9_and_broker_restarts_with_joined_and_receipt_stamped_readings(
    kind, broker, start_agent, readings, model_path, tmp_path_factory
):
    clean = _undisturbed(kind, tmp_path_factory.mktemp(f"clean-{kind}"), readings, model_path)
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    local = broker("local", persistence=True)
    upstream = broker("upstream", persistence=True)
    subscriber = AlertSubscriber(
        "127.0.0.1", upstream.port, device=DEVICE, client_id="chaos-watch", persistent=True
    )
    agent = start_agent(local, upstream, extra=_config(kind))
    wait_status(upstream.port, "online")
    # Receipt times cannot undo what mosquitto 2.0 reorders after its own restart (messages
    # that came while it restarted ahead of its restored queue; docs/storage.md, "Order"): with
    # them the local broker is not restarted, and a fourth kill takes its place.
    local_event = "restart local" if kind == "per_sensor" else "kill"
    events = rng.sample(["kill", "kill", "kill", local_event, "restart upstream"], 5)
    per_reading = len(_messages(kind, readings[:1], "x"))
    with ThreadPoolExecutor(len(ASSETS)) as pool:
        feeds = [
            pool.submit(
                publish_messages,
                _messages(kind, readings, a),
                "127.0.0.1",
                local.port,
                rate=250 * per_reading,
                timeout=300,
            )
            for a in ASSETS
        ]
        agent = disturb(
            events,
            rng,
            agent,
            lambda: start_agent(local, upstream, extra=_config(kind)),
            local,
            upstream,
        )
        for feed in feeds:
            feed.result()
    try:
        outcome = _settle(agent, subscriber, len(ASSETS) * len(readings))
    finally:
        subscriber.close()
    context = f"seed {seed} (rerun with CHAOS_SEED={seed}), events {events}, log {agent.log}"
    assert outcome.stats["readings"] == len(ASSETS) * len(readings), context
    assert outcome.stats["dead_letters"] == 0, f"a reading was applied twice; {context}"
    if kind == "per_sensor":
        assert outcome.ids == clean.ids, context
    else:
        # Receipt times differ from run to run; the episodes may not.
        assert outcome.episodes() == clean.episodes(), context
    agent.wait_logged("subscribed topic")
    assert agent.stop() == 0
