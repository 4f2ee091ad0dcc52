"""Signed fleet pushes end to end: real brokers, real agents as subprocesses, the real
`edge-fleet` CLI. A bad push never takes a device down; a good one reaches every member."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import BrokerConfig
from agent.envelope import write_keypair
from demo.mosquitto import Mosquitto
from fleet.mqtt import connect
from fleet.push import publish_push, push_topic
from fleet.replay import readings_from_csv, replay
from tests.conftest import AgentProcess, SimData, launch_agent, run_cli, wait_for, wait_status
from trainer.train import TrainOptions, train, write_model

GROUP = "line-1"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_keypair(tmp_path / "keys")


@pytest.fixture
def fleet_agent(
    tmp_path: Path, model_path: Path, keys: tuple[Path, Path]
) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(
        local: Mosquitto, upstream: Mosquitto, device: str, health_s: float = 2, fleet: str = ""
    ) -> AgentProcess:
        """`fleet`: more `[fleet]` lines."""
        extra = (
            f'[fleet]\ntrusted_keys = ["{keys[1]}"]\ngroups = ["{GROUP}"]\n'
            f"health_check_s = {health_s}\nhealth_min_windows = 20\n{fleet}"
            "[forward]\nstatus_interval_s = 0.5\n"
        )
        agent = launch_agent(tmp_path / device, local, upstream, model_path, extra, device=device)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


def _push_cli(upstream: Mosquitto, kind: str, file: Path, key: Path, *target: str, **opts):
    args = ["fleet", f"push-{kind}", str(file), "--broker", upstream.address, "--key", str(key)]
    args += list(target)
    for name, value in opts.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _last_push(
    upstream: Mosquitto, device: str, status: str, version: int | None = None, reason: str = ""
) -> dict:
    """The device's status once its last push has this status (version, reason)."""

    def matches(s: dict) -> bool:
        push = s.get("last_push") or {}
        return (
            push.get("status") == status
            and (version is None or push["version"] == version)
            and reason in push.get("reason", "")
        )

    return wait_status(upstream.port, "online", device=device, where=matches)


def test_a_group_push_is_applied_by_every_member(broker, fleet_agent, keys, tmp_path: Path):
    local, upstream = broker("local"), broker("upstream")
    devices = [f"gw-{n}" for n in range(3)]
    for device in devices:
        fleet_agent(local, upstream, device)
    for device in devices:
        wait_status(upstream.port, "online", device=device)
    overlay = tmp_path / "overlay.toml"
    overlay.write_text("[alerts]\nfire_after = 5\n")
    sent = _push_cli(upstream, "config", overlay, keys[0], "--group", GROUP, version=7)
    assert sent["topic"] == f"edge/fleet/group/{GROUP}/config"
    for device in devices:
        status = _last_push(upstream, device, "applied", 7)
        assert status["config_version"] == 7
    shown = run_cli("fleet", "status", "--broker", upstream.address, "--json")
    assert shown.returncode == 0, shown.stderr
    listed = {d["device_id"]: d for d in json.loads(shown.stdout)}
    assert set(devices) <= set(listed)
    for device in devices:
        d = listed[device]
        assert d["online"] and d["config_version"] == 7
        assert d["last_push"]["status"] == "applied" and d["model"]["sha256"]


def test_bad_pushes_are_rejected_and_reported_while_scoring_goes_on(
    broker, fleet_agent, keys, sim_data: SimData, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, "gw-a")
    wait_status(upstream.port, "online", device="gw-a")
    target = ("--device", "gw-a")
    rogue = write_keypair(tmp_path / "rogue")
    good = tmp_path / "good.toml"
    good.write_text("[alerts]\nresolve_after = 12\n")

    # Signed by a key the device does not trust.
    _push_cli(upstream, "config", good, rogue[0], *target, version=10)
    # An untrusted envelope's claims (its version too) are not believed, nor reported.
    _last_push(upstream, "gw-a", "rejected", reason="signed by an untrusted key")
    # A config with an unknown field.
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[alerts]\ncolour = "red"\n')
    _push_cli(upstream, "config", unknown, keys[0], *target, version=11)
    _last_push(upstream, "gw-a", "rejected", 11, reason="alerts.colour")
    # A config that would cut the device off.
    cut_off = tmp_path / "cut_off.toml"
    cut_off.write_text("[upstream]\nport = 1\n")
    _push_cli(upstream, "config", cut_off, keys[0], *target, version=12)
    _last_push(upstream, "gw-a", "rejected", 12, reason="[upstream] cannot be pushed")
    # A corrupt model, signed with the trusted key.
    broker_config = BrokerConfig(port=upstream.port)
    publish_push(broker_config, "edge", "device:gw-a", "model", b"\x08corrupt", keys[0], 12)
    status = _last_push(upstream, "gw-a", "rejected", 12, reason="model:")
    assert status["last_push"]["kind"] == "model"
    # A good push, then a replay of the older one (v12) captured on the wire.
    captured = _retained(upstream, push_topic("edge", "device:gw-a", "config"))
    _push_cli(upstream, "config", good, keys[0], *target, version=13)
    assert _last_push(upstream, "gw-a", "applied", 13)["config_version"] == 13
    client = connect("127.0.0.1", upstream.port)
    client.publish(push_topic("edge", "device:gw-a", "config"), captured, qos=1, retain=True)
    client.publish(push_topic("edge", "device:gw-a", "config"), captured, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    status = _last_push(upstream, "gw-a", "rejected", 12, reason="stale")
    assert status["config_version"] == 13

    readings = readings_from_csv(sim_data.live_csv)[:100]
    replay(readings, "127.0.0.1", local.port, "edge/gw-a/readings/pump-1")
    assert agent.wait_stored(len(readings))["readings"] == len(readings)
    assert agent.process.poll() is None
    assert agent.stop() == 0


def _retained(upstream: Mosquitto, topic: str) -> bytes:
    """The retained message on `topic` (the test's wiretap)."""
    got: list[bytes] = []
    client = connect(
        "127.0.0.1", upstream.port, subscribe=topic, on_message=lambda *a: got.append(a[2].payload)
    )
    try:
        wait_for(lambda: got, 10, f"the retained push on {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def _storm_model(sim_data: SimData, tmp_path: Path) -> Path:
    """Same sensors, trained where the temperature read 200 degrees higher: every live window
    looks critical, though the model scores its own training means fine."""
    with sim_data.train_csv.open() as f:
        rows = list(csv.DictReader(f))
    shifted = tmp_path / "shifted.csv"
    with shifted.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "temperature_c": f"{float(row['temperature_c']) + 200:.4f}"})
    out = tmp_path / "storm.onnx"
    write_model(train(shifted, TrainOptions(model_id="storm", seed=3)), out)
    return out


def test_a_model_that_fails_its_health_check_is_rolled_back(
    broker, fleet_agent, keys, sim_data: SimData, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, "gw-h", health_s=60)
    before = wait_status(upstream.port, "online", device="gw-h")["model"]["sha256"]
    storm = _storm_model(sim_data, tmp_path)
    # In chunks, to carry the model the way a large one would travel.
    _push_cli(upstream, "model", storm, keys[0], "--device", "gw-h", version=21, chunk_size=4096)
    # The pushed model runs while on trial.
    wait_status(
        upstream.port,
        "online",
        device="gw-h",
        where=lambda s: (
            (s["last_push"] or {}).get("status") == "checking" and s["model"]["sha256"] != before
        ),
    )
    readings = readings_from_csv(sim_data.live_csv)[:120]
    replay(readings, "127.0.0.1", local.port, "edge/gw-h/readings/pump-1")
    # The last known good model is back.
    status = wait_status(
        upstream.port,
        "online",
        device="gw-h",
        where=lambda s: (
            (s["last_push"] or {}).get("status") == "rolled_back" and s["model"]["sha256"] == before
        ),
    )
    assert status["last_push"]["version"] == 21
    assert "critical on" in status["last_push"]["reason"]
    assert agent.wait_stored(len(readings))["readings"] == len(readings)
    assert agent.stop() == 0


def test_an_agent_killed_during_its_health_check_rolls_back_when_it_restarts(
    broker, fleet_agent, keys, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, "gw-k", health_s=120)
    wait_status(upstream.port, "online", device="gw-k")
    overlay = tmp_path / "overlay.toml"
    overlay.write_text("[alerts]\ntop_sensors = 2\n")
    _push_cli(upstream, "config", overlay, keys[0], "--device", "gw-k", version=31)
    wait_status(
        upstream.port,
        "online",
        device="gw-k",
        where=lambda s: (
            s["config_version"] == 31 and (s["last_push"] or {}).get("status") == "checking"
        ),
    )
    agent.kill()
    fleet_agent(local, upstream, "gw-k", health_s=120)
    status = _last_push(upstream, "gw-k", "rolled_back", 31, reason="stopped during the health")
    assert status["config_version"] == 0, "back on the local config"


def test_an_operator_rollback_returns_to_the_last_known_good(
    broker, fleet_agent, keys, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    fleet_agent(local, upstream, "gw-r")
    wait_status(upstream.port, "online", device="gw-r")
    for version, fire_after in ((41, 5), (42, 6)):
        overlay = tmp_path / f"v{version}.toml"
        overlay.write_text(f"[alerts]\nfire_after = {fire_after}\n")
        _push_cli(upstream, "config", overlay, keys[0], "--device", "gw-r", version=version)
        _last_push(upstream, "gw-r", "applied", version)
    # Only back to v41 if that is the last known good: v7 is refused, and nothing changes.
    wrong = run_cli(
        "fleet", "rollback", "--kind", "config", "--device", "gw-r", "--to-version", "7",
        "--key", str(keys[0]), "--broker", upstream.address, "--version", "43",
    )  # fmt: skip
    assert wrong.returncode == 0, wrong.stderr
    status = _last_push(upstream, "gw-r", "rejected", 43, reason="cannot roll back to v7")
    assert status["config_version"] == 42
    done = run_cli(
        "fleet", "rollback", "--kind", "config", "--device", "gw-r", "--to-version", "41",
        "--key", str(keys[0]), "--broker", upstream.address, "--version", "44",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = wait_status(
        upstream.port,
        "online",
        device="gw-r",
        where=lambda s: (
            s["config_version"] == 41 and (s["last_push"] or {}).get("status") == "rolled_back"
        ),
    )
    assert status["last_push"]["version"] == 44
    assert status["last_push"]["reason"] == "rolled back by the operator"
