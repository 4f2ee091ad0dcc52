"""Simulation through every source format, the Unix way (issue 16, item 5): `edge-trainer
simulate --out -` piped into `edge-fleet replay -`, both as subprocesses, into the agent process
through a real mosquitto; each format must store every reading and raise the same alerts as our
own JSON, and those alerts must cover the faults the simulator says it injected."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleet.alerts import AlertSubscriber
from tests.conftest import DEVICE, ROOT, wait_for, wait_status

ROWS = 2000
SIMULATE = ("--rows", str(ROWS), "--faults", "spike,drift", "--seed", "3")
START = datetime(2026, 1, 1, tzinfo=UTC)  # trainer.simulate's first timestamp, 60 s apart
WINDOW = 10  # the test model's window (tests/conftest.py `trained`)

SOURCES = """
[[ingest.sources]]
name = "tasmota"
topic = "tele/{asset}/SENSOR"
ts_field = "Time"
sensors = { %(nested)s }
[ingest.sources.timestamps]
zone = "America/New_York"

[[ingest.sources]]
name = "plant"
topic = "plant/{asset}/{sensor}"
format = "value"
sensors = { %(short)s }
[ingest.sources.timestamps]
policy = "payload_else_received"

[[ingest.sources]]
name = "plain"
topic = "spBv1.0/plant/#"
format = "sparkplug_b"

[[ingest.sources]]
name = "mapped"
topic = "spBv1.0/mapped/#"
format = "sparkplug_b"
sensors = { %(metrics)s }
"""


def _config(sensors: list[str]) -> str:
    def table(value: str) -> str:
        return ", ".join(f'{s} = "{value.format(s=s, j=j)}"' for j, s in enumerate(sensors))

    return SOURCES % {
        "nested": table("ENERGY.{s}"),
        "short": table("s{j}"),
        "metrics": table("Inputs/{s}"),
    }


def simulate_into_replay(*replay: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`edge-trainer simulate --out - ... | edge-fleet replay - ...`: (the simulator's
    stderr, the replay's result)."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "trainer", "simulate", "--out", "-", *SIMULATE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert sim.stdout is not None and sim.stderr is not None
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fleet", "replay", "-", *replay],
            stdin=sim.stdout,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        sim.stdout.close()  # the replay holds its own end; ours would keep a dead pipe open
        said = sim.stderr.read().decode()
        sim.stderr.close()
        sim.wait(timeout=60)
    assert sim.returncode == 0, said
    return said, result


def _faults(said: str) -> list[tuple[str, datetime, datetime]]:
    """The faults the simulator reports on stderr, as (label, first time, last time)."""
    found = re.findall(r"(\w+:\w+) rows (\d+)-(\d+)", said)
    assert found, f"the simulator named no faults: {said!r}"
    return [
        (label, START + timedelta(minutes=int(a)), START + timedelta(minutes=int(b)))
        for label, a, b in found
    ]


def _when(ts: object) -> datetime:
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts / 1000 if ts > 1e11 else ts, UTC)
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00"))


def test_a_simulation_piped_through_every_source_format(
    broker, start_agent, trained, tmp_path: Path
):
    sensors = trained.manifest.sensor_names
    local, upstream = broker("local"), broker("upstream")
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(local, upstream, extra=_config(sensors))
    wait_status(upstream.port, "online")
    sources = tmp_path / "sources.toml"
    sources.write_text(_config(sensors))
    at = ("--broker", local.address)
    via = ("--source-config", str(sources), "--source")
    runs = {
        "ref": ("--device", DEVICE, "--asset", "ref"),  # our own JSON: the reference
        "plug": ("--asset", "plug", *via, "tasmota"),  # nested JSON, naive local times
        "pump": ("--asset", "pump", *via, "plant"),  # one value per sensor topic
        "pump-7": ("--sparkplug", "plant/line-1/pump-7"),  # an edge node named on the line
        "pump-8": ("--asset", "pump-8", *via, "mapped"),  # a sparkplug_b source's metrics
    }
    said = ""
    try:
        for asset, args in runs.items():
            said, result = simulate_into_replay(*at, *args)
            assert result.returncode == 0, (asset, result.stderr)
            assert result.stdout == "", "replay prints nothing on stdout"
            assert f"published {ROWS} readings" in result.stderr, result.stderr
        stats = agent.wait_stored(len(runs) * ROWS, timeout=180)
        wait_for(lambda: agent.stats()["alerts_pending"] == 0, 60, "outbox drained")
        delivered = agent.stats()["alerts_delivered"]
        assert subscriber.wait_until(lambda alerts: len(alerts) >= delivered, 60)
    finally:
        subscriber.close()
    assert stats["readings"] == len(runs) * ROWS, stats
    assert stats["dead_letters"] == 0, stats["dead_letters_by_reason"]
    got: dict[str, list[tuple]] = {}
    for a in subscriber.alerts:
        got.setdefault(a["asset"], []).append((a["ts"], a["state"], a["level"], a["score"]))
    assert set(got) == set(runs), sorted(got)
    for asset in runs:
        assert got[asset] == got["ref"], asset
    firing = [_when(ts) for ts, state, _, _ in got["ref"] if state == "firing"]
    for label, first, last in _faults(said):
        late = last + timedelta(minutes=WINDOW)  # a window still holds the fault's last reading
        assert any(first <= t <= late for t in firing), (label, first, firing)
    assert agent.stop() == 0
