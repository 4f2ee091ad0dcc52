"""Signed fleet pushes end to end: real brokers, real agents as subprocesses, the real
`edge-fleet` CLI. A bad push never takes a device down; a good one reaches every member."""

from __future__ import annotations

import csv
import hashlib
import json
import socket
from pathlib import Path

import pytest

from agent.config import BrokerConfig
from agent.envelope import write_keypair
from agent.model.score import Scorer
from agent.pushes.state import FleetState, Version, fleet_dir
from fleet.mqtt import connect
from fleet.push import publish_push, push_topic
from fleet.replay import readings_from_csv, replay
from testbed.mosquitto import Mosquitto
from tests.clockstep import SteppableClock
from tests.conftest import SimData, run_cli, wait_for, wait_status
from tests.manifests import with_stream
from tests.system.pushing import GROUP, last_push, push_cli
from trainer.train import TrainOptions, train, write_model


def test_a_group_push_is_applied_by_every_member(broker, fleet_agent, keys, tmp_path: Path):
    local, upstream = broker("local"), broker("upstream")
    devices = [f"gw-{n}" for n in range(3)]
    for device in devices:
        fleet_agent(local, upstream, device)
    for device in devices:
        wait_status(upstream.port, "online", device=device)
    overlay = tmp_path / "overlay.toml"
    overlay.write_text("[alerts]\nfire_after = 5\n")
    sent = push_cli(upstream, "config", overlay, keys[0], "--group", GROUP, version=7)
    assert sent["topic"] == f"edge/fleet/group/{GROUP}/config"
    for device in devices:
        status = last_push(upstream, device, "applied", 7)
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
    push_cli(upstream, "config", good, rogue[0], *target, version=10)
    # An untrusted envelope's claims (its version too) are not believed, nor reported.
    last_push(upstream, "gw-a", "rejected", reason="signed by an untrusted key")
    # A config with an unknown field.
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[alerts]\ncolour = "red"\n')
    push_cli(upstream, "config", unknown, keys[0], *target, version=11)
    last_push(upstream, "gw-a", "rejected", 11, reason="alerts.colour")
    # A config that would cut the device off.
    cut_off = tmp_path / "cut_off.toml"
    cut_off.write_text("[upstream]\nport = 1\n")
    push_cli(upstream, "config", cut_off, keys[0], *target, version=12)
    last_push(upstream, "gw-a", "rejected", 12, reason="[upstream] cannot be pushed")
    # A corrupt model, signed with the trusted key.
    broker_config = BrokerConfig(port=upstream.port)
    publish_push(broker_config, "edge", "device:gw-a", "model", b"\x08corrupt", keys[0], 12)
    status = last_push(upstream, "gw-a", "rejected", 12, reason="model:")
    assert status["last_push"]["kind"] == "model"
    # A good push, then a replay of the older one (v12) captured on the wire.
    captured = _retained(upstream, push_topic("edge", "device:gw-a", "config"))
    push_cli(upstream, "config", good, keys[0], *target, version=13)
    assert last_push(upstream, "gw-a", "applied", 13)["config_version"] == 13
    client = connect("127.0.0.1", upstream.port)
    client.publish(push_topic("edge", "device:gw-a", "config"), captured, qos=1, retain=True)
    client.publish(push_topic("edge", "device:gw-a", "config"), captured, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    status = last_push(upstream, "gw-a", "rejected", 12, reason="stale")
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
    push_cli(upstream, "model", storm, keys[0], "--device", "gw-h", version=21, chunk_size=4096)
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
    push_cli(upstream, "config", overlay, keys[0], "--device", "gw-k", version=31)
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
    status = last_push(upstream, "gw-k", "rolled_back", 31, reason="stopped during the health")
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
        push_cli(upstream, "config", overlay, keys[0], "--device", "gw-r", version=version)
        last_push(upstream, "gw-r", "applied", version)
    # Only back to v41 if that is the last known good: v7 is refused, and nothing changes.
    wrong = run_cli(
        "fleet", "rollback", "--kind", "config", "--device", "gw-r", "--to-version", "7",
        "--key", str(keys[0]), "--broker", upstream.address, "--version", "43",
    )  # fmt: skip
    assert wrong.returncode == 0, wrong.stderr
    status = last_push(upstream, "gw-r", "rejected", 43, reason="cannot roll back to v7")
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


def test_levels_that_clash_with_the_model_are_rejected_and_the_agent_lives(
    broker, fleet_agent, keys, sim_data: SimData, tmp_path: Path
):
    """`critical = 0.0` is valid on its own but not with the model's `info` and `warning`:
    the push's checks merge them as the pipeline does, so it never gets to a switch."""
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, "gw-l")
    wait_status(upstream.port, "online", device="gw-l")
    overlay = tmp_path / "levels.toml"
    overlay.write_text("[alerts.levels]\ncritical = 0.0\n")
    push_cli(upstream, "config", overlay, keys[0], "--device", "gw-l", version=51)
    status = last_push(upstream, "gw-l", "rejected", 51, reason="alerts.levels: critical = 0.0")
    assert status["config_version"] == 0
    readings = readings_from_csv(sim_data.live_csv)[:50]
    replay(readings, "127.0.0.1", local.port, "edge/gw-l/readings/pump-1")
    assert agent.wait_stored(len(readings))["readings"] == len(readings)
    assert agent.process.poll() is None
    assert agent.logged("Traceback") == 0
    assert agent.stop() == 0


def test_a_pipeline_that_cannot_start_is_rolled_back_with_its_reason_kept(
    broker, fleet_agent, keys, tmp_path: Path
):
    """A pushed config that validates but cannot start (its metrics port is taken) comes back
    as `rolled_back` with the real reason, which a later rejection does not hide."""
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, "gw-p")
    wait_status(upstream.port, "online", device="gw-p")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        overlay = tmp_path / "metrics.toml"
        overlay.write_text(f'[metrics]\nlisten = "{port}"\n')
        push_cli(upstream, "config", overlay, keys[0], "--device", "gw-p", version=61)
        last_push(upstream, "gw-p", "rolled_back", 61, reason=f"metrics.listen {port}")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[alerts]\ncolour = "red"\n')
    push_cli(upstream, "config", unknown, keys[0], "--group", GROUP, version=62)
    status = last_push(upstream, "gw-p", "rejected", 62, reason="alerts.colour")
    outcomes = [(p["version"], p["status"]) for p in status["recent_pushes"]]
    assert outcomes == [(61, "rolled_back"), (62, "rejected")]
    assert f"metrics.listen {port}" in status["recent_pushes"][0]["reason"]
    assert status["config_version"] == 0
    assert agent.process.poll() is None
    assert agent.stop() == 0


def test_a_pushed_textfile_at_the_database_is_rejected(
    broker, fleet_agent, keys, sim_data: SimData, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, "gw-t")
    wait_status(upstream.port, "online", device="gw-t")
    overlay = tmp_path / "textfile.toml"
    overlay.write_text(f'[metrics]\ntextfile = "{agent.data_dir / "agent.db"}"\n')
    push_cli(upstream, "config", overlay, keys[0], "--device", "gw-t", version=71)
    last_push(upstream, "gw-t", "rejected", 71, reason="metrics.textfile cannot be pushed")
    readings = readings_from_csv(sim_data.live_csv)[:50]
    replay(readings, "127.0.0.1", local.port, "edge/gw-t/readings/pump-1")
    assert agent.wait_stored(len(readings))["readings"] == len(readings)
    assert (agent.data_dir / "agent.db").read_bytes().startswith(b"SQLite format 3\0")
    assert agent.stop() == 0


def test_a_pushed_model_overrides_the_command_line(
    broker, fleet_agent, keys, model_path: Path, sim_data: SimData, tmp_path: Path
):
    """file < command line < pushes: with `--model` given, a pushed model is the one checked
    and run, and the status's hash is the running model's."""
    local, upstream = broker("local"), broker("upstream")
    override = tmp_path / "override.onnx"
    options = TrainOptions(algorithm="pca", window=8, model_id="override_pump", seed=11)
    write_model(train(sim_data.train_csv, options), override)
    sha = {p: Scorer.load(p).manifest.graph_sha256 for p in (override, model_path)}
    assert sha[override] != sha[model_path]
    fleet_agent(local, upstream, "gw-m", args=("--model", str(override)))
    status = wait_status(upstream.port, "online", device="gw-m")
    assert status["model"]["sha256"] == sha[override]
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08corrupt")
    push_cli(upstream, "model", corrupt, keys[0], "--device", "gw-m", version=81)
    status = last_push(upstream, "gw-m", "rejected", 81, reason="model")
    assert status["model"]["sha256"] == sha[override]
    push_cli(upstream, "model", model_path, keys[0], "--group", GROUP, version=82)
    status = last_push(upstream, "gw-m", "applied", 82)
    assert status["model"]["sha256"] == sha[model_path], "the pushed model is running"


def _on_trial(upstream: Mosquitto, device: str, version: int) -> dict:
    return wait_status(
        upstream.port,
        "online",
        device=device,
        where=lambda s: (
            s["config_version"] == version and (s["last_push"] or {}).get("status") == "checking"
        ),
    )


MONTH_S = 30 * 86400


def test_a_forward_clock_step_does_not_end_a_trial(
    broker, fleet_agent, keys, sim_data: SimData, tmp_path: Path
):
    local, upstream = broker("local"), broker("upstream")
    clock = SteppableClock(tmp_path / "clock")
    agent = fleet_agent(local, upstream, "gw-f", health_s=600, env=clock.env)
    wait_status(upstream.port, "online", device="gw-f")
    overlay = tmp_path / "overlay.toml"
    overlay.write_text("[alerts]\nfire_after = 4\n")
    push_cli(upstream, "config", overlay, keys[0], "--device", "gw-f", version=91)
    _on_trial(upstream, "gw-f", 91)
    clock.step(MONTH_S)  # a Pi without RTC, a month behind, meets NTP
    # Two rounds of readings: the second is taken in a later turn of the agent's loop than
    # the one that stored the first, so the trial has been judged since the step.
    readings = readings_from_csv(sim_data.live_csv)[:40]
    replay(readings[:20], "127.0.0.1", local.port, "edge/gw-f/readings/pump-1")
    agent.wait_stored(20)
    replay(readings[20:], "127.0.0.1", local.port, "edge/gw-f/readings/pump-1")
    agent.wait_stored(40)

    def after_both_rounds(s: dict) -> bool:
        return s["buffer"]["readings"] + s["buffer"]["dead_letters"] >= 40

    status = wait_status(upstream.port, "online", device="gw-f", where=after_both_rounds)
    assert status["last_push"]["status"] == "checking", "600 s of trial have not elapsed"
    assert status["last_push"]["version"] == 91
    assert agent.stop() == 0


def test_a_backward_clock_step_does_not_stretch_a_trial(broker, fleet_agent, keys, tmp_path):
    local, upstream = broker("local"), broker("upstream")
    clock = SteppableClock(tmp_path / "clock")
    agent = fleet_agent(local, upstream, "gw-b", health_s=3, env=clock.env)
    wait_status(upstream.port, "online", device="gw-b")
    overlay = tmp_path / "overlay.toml"
    overlay.write_text("[alerts]\nfire_after = 4\n")
    push_cli(upstream, "config", overlay, keys[0], "--device", "gw-b", version=92)
    _on_trial(upstream, "gw-b", 92)
    clock.step(-MONTH_S)
    status = last_push(upstream, "gw-b", "applied", 92)  # after 3 s, not a month and 3 s
    assert status["config_version"] == 92
    assert agent.stop() == 0


def test_a_pushed_config_refused_today_is_set_aside_at_start(
    broker, fleet_agent, sim_data: SimData, tmp_path: Path
):
    """A config an older agent accepted (a textfile at the database) is set aside when the
    agent starts, and reported, rather than run or crash-looping the unit."""
    local, upstream = broker("local"), broker("upstream")
    first = fleet_agent(local, upstream, "gw-o")
    wait_status(upstream.port, "online", device="gw-o")
    assert first.stop() == 0
    data_dir = first.data_dir
    folder = fleet_dir(data_dir)
    folder.mkdir(exist_ok=True)
    content = f'[metrics]\ntextfile = "{data_dir / "agent.db"}"\n'.encode()
    (folder / "config-old.toml").write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    version = Version(5, sha, "device:gw-o", "2026-01-01T00:00:00Z", "config-old.toml")
    FleetState(current={"config": version}, seen={"device:gw-o/config": 5}).save(folder)
    checked = run_cli("agent", "check-config", str(first.config))  # the unit's pre-start check
    assert checked.returncode == 0, checked.stderr
    assert "pushed config v5 set aside: metrics.textfile cannot be pushed" in checked.stderr
    agent = fleet_agent(local, upstream, "gw-o")
    status = last_push(upstream, "gw-o", "rolled_back", 5, reason="no longer passes the checks")
    assert "metrics.textfile" in status["last_push"]["reason"]
    assert status["config_version"] == 0
    readings = readings_from_csv(sim_data.live_csv)[:50]
    replay(readings, "127.0.0.1", local.port, "edge/gw-o/readings/pump-1")
    assert agent.wait_stored(len(readings))["readings"] == len(readings)
    assert (data_dir / "agent.db").read_bytes().startswith(b"SQLite format 3\0")
    assert agent.stop() == 0


def _rejected_and_scoring_on(broker, fleet_agent, keys, sim_data, bad, device, version, reason):
    """Push `bad` to a device: it is rejected naming `reason` before any switch, and the
    device keeps scoring with its model."""
    local, upstream = broker("local"), broker("upstream")
    agent = fleet_agent(local, upstream, device)
    wait_status(upstream.port, "online", device=device)
    push_cli(upstream, "model", bad, keys[0], "--device", device, version=version)
    last_push(upstream, device, "rejected", version, reason=reason)
    readings = readings_from_csv(sim_data.live_csv)[:50]
    replay(readings, "127.0.0.1", local.port, f"edge/{device}/readings/pump-1")
    assert agent.wait_stored(len(readings))["readings"] == len(readings)
    assert agent.process.poll() is None
    assert agent.stop() == 0


def test_a_model_whose_novelty_ranges_fit_other_sensors_is_rejected(
    broker, fleet_agent, keys, model_path: Path, sim_data: SimData, tmp_path: Path
):
    """Range novelty (#15) for 3 sensors in a 5-sensor model passed a push's checks (the
    same as `check-config`'s): the device stopped its pipeline to switch, failed to build the
    new one and rolled back. It is now rejected by name before any switch, and the device
    keeps scoring with its model."""

    bad = with_stream(model_path, tmp_path / "bad.onnx", "novelty", low=[0.0] * 3, high=[1.0] * 3)
    _rejected_and_scoring_on(broker, fleet_agent, keys, sim_data, bad, "gw-n", 71, "stream.novelty")


@pytest.mark.parametrize("climb", [-1, 2.5, 10**9])
def test_a_model_whose_tail_gate_release_no_export_gives_is_rejected(
    broker, fleet_agent, keys, model_path: Path, sim_data: SimData, tmp_path: Path, climb
):
    """A pushed model whose gate releases after a negative, fractional or huge climb is
    rejected naming `stream.tail_climb` before any switch, as `check-config` refuses it, and
    the device keeps scoring with its model."""
    bad = with_stream(model_path, tmp_path / "bad.onnx", tail_climb=climb)
    _rejected_and_scoring_on(
        broker, fleet_agent, keys, sim_data, bad, "gw-c", 72, "stream.tail_climb"
    )
