"""An asset's state against hostile readings (#13): a time far in the future must not blind the
asset, made-up asset names must not grow memory or the database, a database from an older
release must not stop an asset or overflow memory, and an operator can reset one asset. The
agent runs as a process between real brokers, on real SQLite files."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

from agent.ingest import parse_ts
from fleet.mqtt import connect
from fleet.replay import readings_from_csv
from tests.clockstep import SteppableClock
from tests.conftest import DEVICE, AgentProcess, run_cli, wait_for, wait_status

TOPIC = f"edge/{DEVICE}/readings/"
FUTURE = "9000-01-01T00:00:00Z"


def _publish(port: int, messages: list[tuple[str, object]]) -> None:
    """Publish (asset, reading) pairs at QoS 1 in order; return once the broker has them all."""
    client = connect("127.0.0.1", port)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *_: acked.release()
    try:
        for asset, reading in messages:
            client.publish(TOPIC + asset, json.dumps(reading), qos=1)
        for _ in messages:
            assert acked.acquire(timeout=120), "the broker acknowledged every reading"
    finally:
        client.disconnect()
        client.loop_stop()


def _dead(agent: AgentProcess, reason: str) -> int:
    return agent.stats().get("dead_letters_by_reason", {}).get(reason, 0)


def _states(agent: AgentProcess) -> dict[str, float]:
    """Each asset in `asset_state` with its last reading time."""
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        return dict(db.execute("SELECT asset, last_ts FROM asset_state"))


def _scored(agent: AgentProcess, asset: str) -> int:
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        blobs = db.execute("SELECT score FROM readings WHERE asset = ?", (asset,)).fetchall()
    return sum(
        v == v for (blob,) in blobs for v in memoryview(blob).cast("f")
    )  # NaN until the window fills


def test_a_future_reading_between_normal_ones_leaves_every_later_one_stored(
    broker, start_agent, sim_data
):
    """30 normal readings, one dated 9000, 50 normal: all 80 normal ones are stored, across a
    SIGHUP and a restart, on both of the parser's paths (one reading, and an array of clean
    readings with numeric times, which takes the block path)."""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    readings = [{**r, "ts": parse_ts(r["ts"])} for r in readings_from_csv(sim_data.live_csv)]
    future = {**readings[30], "ts": parse_ts(FUTURE)}
    _publish(local.port, [("pump-1", r) for r in readings[:30]])
    _publish(local.port, [("pump-1", {**readings[30], "ts": FUTURE})])
    _publish(local.port, [("pump-1", readings[30:55])])
    agent.wait_stored(56)
    agent.process.send_signal(signal.SIGHUP)  # an unchanged config: the state stays
    agent.wait_logged("reload: config, model and secrets unchanged")
    _publish(local.port, [("pump-1", [future, readings[55]])])
    _publish(local.port, [("pump-1", r) for r in readings[56:80]])
    stats = agent.wait_stored(82)
    assert stats["readings"] == 80, stats
    assert stats["dead_letters_by_reason"] == {"future_ts": 2}
    assert agent.stop() == 0
    agent = start_agent(local, upstream)
    _publish(local.port, [("pump-1", r) for r in readings[80:90]])
    assert agent.wait_stored(92)["readings"] == 90
    assert _states(agent)["pump-1"] == readings[89]["ts"]
    assert agent.stop() == 0


def test_an_asset_an_older_release_blinded_is_repaired_at_start(broker, start_agent, sim_data):
    """An older agent accepted the 9000 reading and saved the asset's clock; the upgraded agent
    resets that clock at start, says so, and takes normal readings again."""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    readings = readings_from_csv(sim_data.live_csv)[:60]
    _publish(local.port, [("pump-1", r) for r in readings[:30]] + [("pump-2", readings[0])])
    agent.wait_stored(31)
    assert agent.stop() == 0
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        db.execute("UPDATE asset_state SET last_ts = 221845392000 WHERE asset = 'pump-1'")
        columns = {row[1] for row in db.execute("PRAGMA table_info(asset_state)")}
        if "seen_at" in columns:  # the layout of the release that let the 9000 reading in
            db.execute("ALTER TABLE asset_state DROP COLUMN seen_at")
    agent = start_agent(local, upstream)
    agent.wait_logged("reset the clock of 1 assets")
    assert agent.logged("pump-1@221845392000")
    _publish(local.port, [("pump-1", r) for r in readings[30:60]])
    stats = agent.wait_stored(61)
    assert stats["readings"] == 61 and stats["dead_letters"] == 0, stats
    assert _scored(agent, "pump-1") == 60 - 10 + 1, "the window carried on across the repair"
    assert agent.stop() == 0


def test_a_gateway_clock_stepped_back_does_not_blind_its_assets(
    broker, start_agent, sim_data, tmp_path: Path
):
    """The gateway clock runs a day ahead (a bad NTP source) and a publisher stamps readings
    with it; the clock is then stepped back. The asset's clock was a day ahead of the gateway's
    and every reading was `out_of_order` for that day, unless the agent restarted (only the
    start repaired it). Now the running agent resets it within a second, as at start."""
    local, upstream = broker("local"), broker("upstream")
    clock = SteppableClock(tmp_path / "clock")
    day = 86400.0
    clock.step(day)
    agent = start_agent(local, upstream, env=clock.env)
    wait_status(upstream.port, "online")
    now = time.time()
    readings = readings_from_csv(sim_data.live_csv)[:40]
    ahead = [{**r, "ts": now + day + i} for i, r in enumerate(readings[:20])]
    _publish(local.port, [("pump-1", r) for r in ahead])
    agent.wait_stored(20)
    clock.step(0)
    agent.wait_logged("reset the clock of 1 assets")
    later = [{**r, "ts": now + 60 + i} for i, r in enumerate(readings[20:])]
    _publish(local.port, [("pump-1", r) for r in later])
    stats = agent.wait_stored(40)
    assert stats["readings"] == 40 and stats["dead_letters"] == 0, stats
    assert _scored(agent, "pump-1") == 40 - 10 + 1, "the window carried on"
    assert agent.stop() == 0


def test_an_operator_resets_one_asset_with_the_agent_running_or_stopped(
    broker, start_agent, sim_data
):
    """With the bound turned off (`max_future_s` huge), a reading dated 9000 blinds pump-1;
    `edge-agent reset-asset` gives it back, whether the agent runs or not."""
    local, upstream = broker("local"), broker("upstream")
    no_bound = "[ingest]\nmax_future_s = 1e12\n"
    agent = start_agent(local, upstream, extra=no_bound)
    wait_status(upstream.port, "online")
    readings = readings_from_csv(sim_data.live_csv)
    blind = ("pump-1", {**readings[0], "ts": FUTURE})
    _publish(local.port, [blind])
    agent.wait_stored(1)  # not in one batch with the next: a batch is put in time order first
    _publish(local.port, [("pump-1", readings[1]), ("pump-2", readings[0])])
    agent.wait_stored(3)
    assert _dead(agent, "out_of_order") == 1, "blinded"

    reset = run_cli("agent", "reset-asset", "--config", str(agent.config), "pump-1")
    assert reset.returncode == 0, reset.stderr
    assert "reset pump-1" in reset.stdout
    agent.wait_logged("reset 1 assets on request")
    _publish(local.port, [("pump-1", r) for r in readings[2:12]])
    assert agent.wait_stored(13)["readings"] == 12
    assert set(_states(agent)) == {"pump-1", "pump-2"}

    _publish(local.port, [("pump-1", {**readings[2], "ts": FUTURE})])  # not a copy of the first
    agent.wait_stored(14)
    assert agent.stop() == 0
    reset = run_cli("agent", "reset-asset", "--config", str(agent.config), "pump-1")
    assert reset.returncode == 0, reset.stderr
    assert set(_states(agent)) == {"pump-2"}, "stopped: the command itself deletes the state"
    agent = start_agent(local, upstream, extra=no_bound)
    _publish(local.port, [("pump-1", r) for r in readings[12:22]])
    stats = agent.wait_stored(24)
    assert stats["readings"] == 23 and stats["dead_letters"] == 1, stats
    # After each reset a new window: of 10 readings 9 fill it; and the second 9000 reading.
    assert _scored(agent, "pump-1") == 1 + 1 + 1

    unknown = run_cli("agent", "reset-asset", "--config", str(agent.config), "pump-9")
    assert unknown.returncode == 1 and "'pump-9' has no state" in unknown.stderr
    bad = run_cli("agent", "reset-asset", "--config", str(agent.config), "pump/1")
    assert bad.returncode == 2 and "not an asset name" in bad.stderr
    assert agent.stop() == 0


def _rss_mib(agent: AgentProcess) -> float:
    status = Path(f"/proc/{agent.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_30000_made_up_asset_names_are_dead_letters_and_memory_stays_bounded(
    broker, start_agent, sim_data
):
    """#13: 110,000 asset names took 135 MiB, no dead letter, no log line. Now the first
    `ingest.max_assets` (1,000) get state, the rest are `too_many_assets`, the known asset
    scores on, and resident memory grows by at most 20 MiB (a bound, not a timing)."""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    readings = readings_from_csv(sim_data.live_csv)
    _publish(local.port, [("pump-1", r) for r in readings[:20]])
    agent.wait_stored(20)
    before = _rss_mib(agent)
    made_up = 30_000
    _publish(local.port, [(f"junk-{i:05d}", readings[0]) for i in range(made_up)])
    _publish(local.port, [("pump-1", r) for r in readings[20:40]])
    stats = agent.wait_stored(40 + made_up, timeout=180)
    grown = _rss_mib(agent) - before
    assert grown <= 20, f"RSS grew {grown:.1f} MiB"
    assert _dead(agent, "too_many_assets") == made_up - 999, stats["dead_letters_by_reason"]
    assert stats["readings"] == 40 + 999
    assert _scored(agent, "pump-1") == 40 - 10 + 1, "the known asset scores on"
    assert len(_states(agent)) == 1000
    assert agent.logged("reason=too_many_assets") >= 1, "a warning, rate-limited"
    assert agent.stop() == 0


def test_silent_assets_are_forgotten_and_a_restart_keeps_the_newest(broker, start_agent, sim_data):
    """Made-up names hold places only until they fall silent for `ingest.asset_idle_s`, in
    memory and in the database; a restart restores at most `ingest.max_assets`, newest first,
    and deletes the rest (an older database held 104,764 and the restart ran out of memory)."""
    local, upstream = broker("local"), broker("upstream")
    readings = readings_from_csv(sim_data.live_csv)
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    for n in range(5):  # one batch each: seen in this order
        _publish(local.port, [(f"a{n}", readings[0])])
        agent.wait_stored(n + 1)
    assert agent.stop() == 0

    agent = start_agent(local, upstream, extra="[ingest]\nmax_assets = 2\n")
    agent.wait_logged("forgot 3 assets at start")
    assert set(_states(agent)) == {"a3", "a4"}
    _publish(local.port, [("a0", readings[1]), ("a4", readings[1])])
    stats = agent.wait_stored(7)
    assert stats["dead_letters_by_reason"] == {"too_many_assets": 1}
    assert agent.stop() == 0

    agent = start_agent(local, upstream, extra="[ingest]\nmax_assets = 2\nasset_idle_s = 1\n")
    wait_status(upstream.port, "online")
    wait_for(lambda: not _states(agent), 30, "a3 and a4 forgotten once silent for 1 s")
    _publish(local.port, [("b1", readings[0]), ("b2", readings[0])])
    agent.wait_stored(9)
    wait_for(lambda: not _states(agent), 30, "b1 and b2 forgotten once silent")
    agent.wait_logged("assets silent for over 1s")
    _publish(local.port, [("c1", readings[0]), ("c2", readings[0])])
    stats = agent.wait_stored(11)
    assert stats["dead_letters_by_reason"] == {"too_many_assets": 1}, "places were free again"
    assert agent.stop() == 0


def _peak_mib(agent: AgentProcess) -> float:
    status = Path(f"/proc/{agent.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_a_database_with_105000_assets_starts_within_memory(broker, start_agent, sim_data):
    """#13: a restart restored 104,764 assets (peak 290 MiB, over the unit's MemoryMax=256M).
    Now at most `ingest.max_assets` are read, the rest deleted, and the peak stays low."""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online")
    _publish(local.port, [("pump-1", readings_from_csv(sim_data.live_csv)[0])])
    agent.wait_stored(1)
    assert agent.stop() == 0
    with sqlite3.connect(agent.data_dir / "agent.db") as db:
        others = [row[1] for row in db.execute("PRAGMA table_info(asset_state)")][1:]
        listed = ", ".join(others)
        db.execute(  # copies of pump-1's state, as left by a publisher inventing names
            f"INSERT INTO asset_state (asset, {listed}) WITH RECURSIVE n(i) AS (SELECT 1 "
            "UNION ALL SELECT i + 1 FROM n WHERE i < 105000) "
            f"SELECT 'junk-' || i, {listed} FROM asset_state, n"
        )
    agent = start_agent(local, upstream)
    wait_status(upstream.port, "online", timeout=60)
    peak = _peak_mib(agent)  # 247 MiB before the bound
    assert peak <= 150, f"peak RSS {peak:.0f} MiB"
    assert agent.logged("forgot 104001 assets at start")
    assert len(_states(agent)) == 1000
    assert agent.stop() == 0
