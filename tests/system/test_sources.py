"""Each source format end to end: a real mosquitto, the agent as a process, readings published
as their publishers send them (through `edge-fleet replay --source-config` for one of them), and
the alerts they cause compared with the same readings sent as our own JSON."""

from __future__ import annotations

import json
import random
from datetime import datetime
from pathlib import Path

import pytest

from agent.config import SourceConfig
from fleet.alerts import AlertSubscriber
from fleet.replay import publish_messages, readings_from_csv, replay
from fleet.sources import encode
from tests.conftest import DEVICE, run_cli, wait_for, wait_status

PEAK_MIB = 160  # as tests/system/test_flood.py: an agent that takes no junk peaks near 90 MiB

SOURCES = """
[[ingest.sources]]
name = "tasmota"
topic = "tele/{asset}/SENSOR"
ts_field = "Time"
sensors = { %(tasmota)s }
[ingest.sources.timestamps]
zone = "America/New_York"

[[ingest.sources]]
name = "plc"
topic = "plc/{asset}/state"
ts_field = "meta.t"

[[ingest.sources]]
name = "plant"
topic = "plant/{asset}/{sensor}"
format = "value"
sensors = { %(short)s }
"""


@pytest.fixture(scope="module")
def model_path(sim_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's model (tests/conftest.py) without the stream's daily profile: a reading
    stamped on receipt lands in another hour of the day than its payload's time, and the
    profile's score depends on the hour, so only a model without one gives the same alerts
    for the same readings at other times (the test below compares exactly that)."""
    from trainer.train import TrainOptions, train, write_model

    options = TrainOptions(
        algorithm="pca", window=10, model_id="test_pump", seed=3, stream={"profile_rate": 0}
    )
    trained = train(sim_data.train_csv, options)
    assert trained.manifest.stream.profile is None
    return write_model(trained, tmp_path_factory.mktemp("model") / "test_pump.onnx")


@pytest.fixture(scope="module")
def readings(sim_data) -> list[dict]:
    return readings_from_csv(sim_data.live_csv)


def _config(sensors: list[str]) -> str:
    tasmota = ", ".join(f'{s} = "ENERGY.{s}"' for s in sensors)
    short = ", ".join(f'{s} = "s{j}"' for j, s in enumerate(sensors))
    return SOURCES % {"tasmota": tasmota, "short": short}


def _epoch_ms(ts: str) -> int:
    return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _by_asset(alerts: list[dict]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for a in alerts:
        out.setdefault(a["asset"], []).append((a["ts"], a["state"], a["level"], a["score"]))
    return out  # in the order they were sent (times stamped on receipt may share a millisecond)


def _shape(alerts: list[tuple]) -> list[tuple]:
    """An asset's alerts without their times: what a received time cannot make identical."""
    return [(state, level, score) for _, state, level, score in alerts]


def test_every_format_gives_the_alerts_our_own_json_gives(
    broker, start_agent, readings, sim_data, tmp_path: Path
):
    sensors = [k for k in readings[0] if k != "ts"]
    local, upstream = broker("local"), broker("upstream")
    config = _config(sensors)
    subscriber = AlertSubscriber("127.0.0.1", upstream.port, device=DEVICE)
    agent = start_agent(local, upstream, extra=config)
    wait_status(upstream.port, "online")
    # Our own JSON: the reference.
    replay(readings, "127.0.0.1", local.port, f"edge/{DEVICE}/readings/ref")
    # Tasmota-like: nested fields, a naive local time; through the command line.
    source_file = tmp_path / "sources.toml"
    source_file.write_text(config)
    out = run_cli(
        "fleet", "replay", str(sim_data.live_csv),
        "--broker", f"127.0.0.1:{local.port}", "--device", DEVICE, "--asset", "plug",
        "--source-config", str(source_file), "--source", "tasmota",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # A PLC gateway's epoch milliseconds at a nested path.
    plc = SourceConfig(name="plc", topic="plc/{asset}/state", ts_field="meta.t")
    stamped = [{**r, "ts": _epoch_ms(r["ts"])} for r in readings]
    publish_messages(encode(plc, "press", stamped), "127.0.0.1", local.port)
    # One bare number per sensor topic, stamped on receipt and joined.
    plant = SourceConfig.model_validate(
        {"name": "plant", "topic": "plant/{asset}/{sensor}", "format": "value",
         "sensors": {s: f"s{j}" for j, s in enumerate(sensors)}}
    )  # fmt: skip
    publish_messages(encode(plant, "pump", readings), "127.0.0.1", local.port)
    try:
        wait_for(
            lambda: agent.stats().get("readings", 0) >= 4 * len(readings),
            120,
            f"every reading stored; {agent.log}",
        )
        wait_for(lambda: agent.stats()["alerts_pending"] == 0, 60, "outbox drained")
        delivered = agent.stats()["alerts_delivered"]
        assert subscriber.wait_until(lambda alerts: len(alerts) >= delivered, 60)
    finally:
        subscriber.close()
    stats = agent.stats()
    assert stats["dead_letters"] == 0, stats["dead_letters_by_reason"]
    got = _by_asset(subscriber.alerts)
    assert got["ref"], "the input must produce alerts"
    # The naive local time (a fixed offset at those dates, through a DST change or not) and
    # the milliseconds give the very same times as our own JSON.
    assert got["plug"] == got["ref"]
    assert got["press"] == got["ref"]
    # Received times: the same alerts at other times.
    assert _shape(got["pump"]) == _shape(got["ref"])
    assert agent.stop() == 0


def test_hostile_publishers_on_every_source_are_counted_and_bounded(broker, start_agent, readings):
    sensors = [k for k in readings[0] if k != "ts"]
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream, extra="[ingest]\nmax_assets = 50\n" + _config(sensors))
    wait_status(upstream.port, "online")
    rng = random.Random(3)
    junk: list[tuple[str, bytes]] = []
    want: dict[str, int] = {}

    def add(topic: str, payload: bytes, reason: str | None) -> None:
        junk.append((topic, payload))
        if reason is not None:
            want[reason] = want.get(reason, 0) + 1

    good = {f"ENERGY.{s}": 1.0 for s in sensors}
    for n in range(200):
        add(f"tele/plug{n % 5}/SENSOR", json.dumps({"Time": [n], "ENERGY": good}).encode(),
            "bad_ts")  # fmt: skip
        add(f"tele/plug{n % 5}/SENSOR", b"\xff" * (n % 7 + 1), "binary")
        add("plc/press/state", json.dumps({"meta": {"t": 1}, sensors[0]: "hot"}).encode(),
            "not_numeric")  # fmt: skip
        add(f"plant/p1/s{n % len(sensors)}", b"NaN" if n % 2 else b"warm",
            "not_finite" if n % 2 else "not_numeric")  # fmt: skip
    # Distinct sensors without end, assets without end, names no asset can have.
    for n in range(3000):
        add(f"plant/p1/made_up_{n}", b"1.0", "unknown_sensor")
    for n in range(3000):
        add(f"plant/asset{n}/s0", str(rng.random()).encode(), None)  # too_many or missing
    for n in range(300):
        add(f"plant/{'x' * 70}{n}/s0", b"1.0", "bad_topic")  # not an identifier
        add(f"tele/bad$name{n}/SENSOR", b"{}", "bad_topic")
    publish_messages(junk, "127.0.0.1", local.port)
    total = len(junk)
    # The flood of assets: 50 get a place and wait join_wait_s for their other sensors, then
    # are rejected as missing them; the others are refused at once.
    want["too_many_assets"] = 3000 - 50
    want["missing_sensor"] = 50
    # Wait for every dead letter expected, the 50 that wait join_wait_s included: the sum of
    # readings and dead letters could reach `total` before those were rejected (a loaded
    # machine's make test saw it), and the test then read the counts too early.
    stats = wait_for(
        lambda: (s := agent.stats()) and s["dead_letters"] >= sum(want.values()) and s,
        120,
        f"the junk applied; {agent.log}",
    )
    assert stats["readings"] + stats["dead_letters"] >= total, stats
    assert stats["dead_letters_by_reason"] == want
    assert agent.peak_rss_mib() <= PEAK_MIB
    # Still scoring: good readings after the junk are taken.
    publish_messages(
        encode(SourceConfig(name="plc", topic="plc/{asset}/state", ts_field="meta.t"),
               "press", readings[:50]),
        "127.0.0.1", local.port,
    )  # fmt: skip
    wait_for(lambda: agent.stats()["readings"] >= 50, 60, "good readings after the junk")
    assert agent.stop() == 0


def test_a_message_matching_two_sources_is_one_reading(broker, start_agent, readings):
    """The broker sends one copy per matching subscription (mosquitto does, each with its own
    packet id): a topic two sources' filters match must still give one reading, not one per
    copy (values stamped on receipt would otherwise be kept twice)."""
    sensors = [k for k in readings[0] if k != "ts"]
    short = ", ".join(f'{s} = "s{j}"' for j, s in enumerate(sensors))
    overlapping = f"""
[[ingest.sources]]
name = "plant"
topic = "plant/{{asset}}/{{sensor}}"
format = "value"
sensors = {{ {short} }}

[[ingest.sources]]
name = "sites"
topic = "+/{{asset}}/{{sensor}}"
format = "value"
sensors = {{ {short} }}
"""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream, extra=overlapping)
    wait_status(upstream.port, "online")
    plant = SourceConfig.model_validate(
        {"name": "plant", "topic": "plant/{asset}/{sensor}", "format": "value",
         "sensors": {s: f"s{j}" for j, s in enumerate(sensors)}}
    )  # fmt: skip
    count = 40
    messages = list(encode(plant, "pump", readings[:count]))
    # A marker after them, in order on the same connection: a dead letter of its own reason.
    messages.append((f"edge/{DEVICE}/readings/pump", b"not json"))
    publish_messages(messages, "127.0.0.1", local.port)
    stats = wait_for(
        lambda: (s := agent.stats()) and s["dead_letters"] >= 1 and s,
        60,
        f"the marker applied; {agent.log}",
    )
    assert stats["readings"] == count, stats["dead_letters_by_reason"]
    assert stats["dead_letters"] == 1, stats["dead_letters_by_reason"]
    assert agent.stop() == 0


@pytest.mark.parametrize("where", ["source", "default"])
def test_naive_times_through_the_hour_a_fall_back_repeats(broker, start_agent, readings, where):
    """A sensor's naive local clock runs 01:00-01:59 twice when daylight saving time ends:
    the second pass is later than the first, not a copy of it. Every reading is kept, none
    dead-lettered `out_of_order` (an hour of an asset's readings lost). On a configured
    source and on the default readings topic."""
    sensors = [k for k in readings[0] if k != "ts"]
    if where == "source":
        config = """
[[ingest.sources]]
name = "plc"
topic = "plc/{asset}/state"
ts_field = "Time"
[ingest.sources.timestamps]
zone = "America/New_York"
"""
        topic, field = "plc/press/state", "Time"
    else:
        config = '[ingest.timestamps]\nzone = "America/New_York"\n'
        topic, field = f"edge/{DEVICE}/readings/press", "ts"
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream, extra=config)
    wait_status(upstream.port, "online")
    # 2025-11-02: EDT ends at 02:00, the clock goes back to 01:00. One reading a minute from
    # 00:30 as the sensor's clock shows it, through both passes, to 02:29.
    clock = [f"00:{m:02d}" for m in range(30, 60)]
    clock += [f"01:{m:02d}" for m in range(60)] * 2
    clock += [f"02:{m:02d}" for m in range(30)]
    messages = [
        (topic, json.dumps({field: f"2025-11-02T{hhmm}:00", **{s: r[s] for s in sensors}}).encode())
        for hhmm, r in zip(clock, readings, strict=False)
    ]
    assert len(messages) == len(clock)
    messages.append((f"edge/{DEVICE}/readings/marker", b"not json"))  # a marker after them
    publish_messages(messages, "127.0.0.1", local.port)
    stats = wait_for(
        lambda: (s := agent.stats()) and s["dead_letters"] >= 1 and s,
        60,
        f"the marker applied; {agent.log}",
    )
    assert stats["dead_letters_by_reason"] == {"invalid_json": 1}
    assert stats["readings"] == len(clock)
    assert agent.stop() == 0


def test_a_flood_of_new_assets_does_not_blind_the_assets_already_known(
    broker, start_agent, readings
):
    """Anyone on the local broker can send one sensor's value for ever new asset names: they
    fill the join's `max_assets` places while they wait for their other sensors. An asset
    the agent already scores keeps its readings meanwhile."""
    sensors = [k for k in readings[0] if k != "ts"]
    short = ", ".join(f'{s} = "s{j}"' for j, s in enumerate(sensors))
    config = f"""
[ingest]
max_assets = 20

[[ingest.sources]]
name = "plant"
topic = "plant/{{asset}}/{{sensor}}"
format = "value"
join_wait_s = 600
sensors = {{ {short} }}
"""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream, extra=config)
    wait_status(upstream.port, "online")
    plant = SourceConfig.model_validate(
        {"name": "plant", "topic": "plant/{asset}/{sensor}", "format": "value",
         "sensors": {s: f"s{j}" for j, s in enumerate(sensors)}}
    )  # fmt: skip
    known = list(encode(plant, "pump", readings[:1]))
    publish_messages(known, "127.0.0.1", local.port)
    wait_for(lambda: agent.stats()["readings"] == 1, 60, f"the first reading; {agent.log}")
    flood = [(f"plant/junk{n}/s0", b"1.0") for n in range(100)]
    later = list(encode(plant, "pump", readings[1:11]))
    marker = [(f"edge/{DEVICE}/readings/marker", b"not json")]
    publish_messages(flood + later + marker, "127.0.0.1", local.port)
    stats = wait_for(
        lambda: (s := agent.stats()) and "invalid_json" in s["dead_letters_by_reason"] and s,
        60,
        f"the marker applied; {agent.log}",
    )
    assert stats["readings"] == 11, stats["dead_letters_by_reason"]
    assert stats["dead_letters_by_reason"] == {"invalid_json": 1, "too_many_assets": 80}
    assert agent.peak_rss_mib() <= PEAK_MIB
    assert agent.stop() == 0


def test_a_source_over_the_agent_s_own_readings_topic_gives_one_reading_per_message(
    broker, start_agent, readings
):
    """A source whose filter also matches the default readings topic: the readings topic
    takes its messages, once each (not one copy per subscription: a second copy was a
    `duplicate_ts` dead letter, or a second reading when stamped on receipt)."""
    config = """
[ingest.timestamps]
policy = "payload_else_received"

[[ingest.sources]]
name = "everything"
topic = "edge/+/readings/{asset}"
"""
    local, upstream = broker("local"), broker("upstream")
    agent = start_agent(local, upstream, extra=config)
    wait_status(upstream.port, "online")
    count = 30
    untimed = [{k: v for k, v in r.items() if k != "ts"} for r in readings[count : 2 * count]]
    messages = [(f"edge/{DEVICE}/readings/pump", json.dumps(r)) for r in readings[:count]]
    messages += [(f"edge/{DEVICE}/readings/fan", json.dumps(r)) for r in untimed]
    messages.append((f"edge/{DEVICE}/readings/marker", b"not json"))
    publish_messages(messages, "127.0.0.1", local.port)
    stats = wait_for(
        lambda: (s := agent.stats()) and "invalid_json" in s["dead_letters_by_reason"] and s,
        60,
        f"the marker applied; {agent.log}",
    )
    assert stats["dead_letters_by_reason"] == {"invalid_json": 1}
    assert stats["readings"] == 2 * count
    assert agent.stop() == 0
