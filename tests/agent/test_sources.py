"""Configured sources through the pipeline, with a real ONNX model: no broker, no database.
Formats, timestamps, the join of one-sensor messages, and hostile input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import AgentConfig, SourceConfig, TimestampConfig
from agent.model.score import Scorer
from agent.pipeline import Applied, Message, Pipeline
from agent.sources.join import MAX_WAITING
from agent.sources.stamps import Stamper
from agent.sources.topics import TopicTemplate
from tests.conftest import DEVICE, run_cli

T0 = 1_700_000_000.0


def _config(model_path: Path, tmp_path: Path, sources: list[dict], **ingest: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "device": {"id": DEVICE},
            "upstream": {"host": "127.0.0.1"},
            "model": {"path": str(model_path)},
            "storage": {"data_dir": str(tmp_path)},
            "ingest": {"sources": sources, **ingest},
        }
    )


@pytest.fixture
def make(model_path: Path, tmp_path: Path) -> Callable[..., Pipeline]:
    scorer = Scorer.load(model_path)

    def build(sources: list[dict], **ingest: object) -> Pipeline:
        clock = iter(range(1, 1_000_000))
        config = _config(model_path, tmp_path, sources, **ingest)
        return Pipeline(config, scorer, lambda: next(clock))

    return build


class Feed:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.sensors = pipeline.scorer.manifest.sensor_names
        self.means = [s.mean for s in pipeline.scorer.manifest.sensors]
        self.mid = 0

    def message(self, topic: str, payload: bytes | str, received: float) -> Message:
        self.mid += 1
        raw = payload.encode() if isinstance(payload, str) else payload
        by_receipt = self.pipeline.sources.by_receipt(topic) if self.pipeline.sources else False
        return Message(topic, raw, received, self.mid, False, 1, by_receipt)

    def apply(self, messages: list[Message], now: float | None = None) -> Applied:
        applied = self.pipeline.apply(messages, now)
        self.pipeline.remember(applied.batch.digests)
        return applied


def _readings(applied: Applied) -> list[tuple[str, float, list[float]]]:
    return [
        (b.asset, float(t), row.tolist())
        for b in applied.batch.readings
        for t, row in zip(b.ts, b.values, strict=True)
    ]


def _reasons(applied: Applied) -> list[str]:
    return [d.reason for d in applied.batch.dead]


def test_topic_templates_bind_asset_and_sensor_and_match_nothing_else():
    t = TopicTemplate("plant/{asset}/{sensor}")
    assert t.filter == "plant/+/+"
    bound = t.match("plant/pump1/temp")
    assert bound is not None and (bound.asset, bound.sensor) == ("pump1", "temp")
    assert t.match("plant/pump1") is None and t.match("plant/pump1/temp/x") is None
    assert t.match("other/pump1/temp") is None
    assert t.match("plant/pump 1/temp") is None, "an asset must be an identifier"
    tail = TopicTemplate("tele/{asset}/#")
    assert tail.filter == "tele/+/#" and tail.match("tele/plug/SENSOR").asset == "plug"


@pytest.mark.parametrize(
    ("settings", "raw", "want"),
    [
        ({"unit": "auto"}, 1_700_000_000_123, 1_700_000_000.123),
        ({"unit": "auto"}, 1_700_000_000.5, 1_700_000_000.5),
        ({"unit": "ms"}, 1_700_000_000_000, 1_700_000_000.0),
        ({"zone": "Europe/Berlin"}, "2020-03-09 10:34:33", 1583746473.0),  # CET, UTC+1
        ({"zone": "Europe/Berlin"}, "2020-07-09 10:34:33", 1594283673.0),  # CEST, UTC+2
        ({"zone": "Europe/Berlin"}, "2020-03-09T10:34:33Z", 1583750073.0),  # an offset wins
        ({}, "2020-03-09 10:34:33", "no time zone"),
        ({"policy": "received"}, 5.0, 42.0),
        ({"policy": "payload_else_received"}, None, 42.0),
        ({"policy": "payload_else_received"}, 7.0, 7.0),
        ({"policy": "payload"}, None, "missing"),
        ({"unit": "auto"}, True, "must be"),
        ({"unit": "ms"}, 10**400, "out of range"),
    ],
)
def test_timestamp_policies_units_and_zones(settings: dict, raw: object, want: object):
    got = Stamper(TimestampConfig(**settings)).stamp(raw, 42.0)
    if isinstance(want, str):
        assert isinstance(got, str) and want in got
    else:
        assert got == pytest.approx(want, abs=1e-6)


def test_a_zone_that_does_not_exist_is_refused_at_config_load():
    with pytest.raises(ValueError, match="IANA"):
        TimestampConfig(zone="Mars/Olympus")
    with pytest.raises(ValueError, match="sensor"):
        SourceConfig(name="v", topic="plant/{asset}/x", format="value")


def test_json_with_field_paths_and_a_naive_time_in_a_zone(make):
    p = make([{
        "name": "tasmota", "topic": "tele/{asset}/SENSOR",
        "sensors": {}, "ts_field": "Time", "timestamps": {"zone": "UTC"},
    }])  # fmt: skip
    feed = Feed(p)
    paths = {name: f"ENERGY.{name}" for name in feed.sensors}
    p = make([{
        "name": "tasmota", "topic": "tele/{asset}/SENSOR", "sensors": paths,
        "ts_field": "Time", "timestamps": {"zone": "UTC"},
    }])  # fmt: skip
    feed = Feed(p)
    energy = dict(zip(feed.sensors, feed.means, strict=True))
    payload = json.dumps({"Time": "2023-11-14T22:13:20", "ENERGY": energy})
    applied = feed.apply([feed.message("tele/plug1/SENSOR", payload, T0 + 1)])
    assert _readings(applied) == [("plug1", T0, feed.means)]
    wrong = json.dumps({"Time": "2023-11-14T22:13:21", "ENERGY": {**energy, feed.sensors[0]: "x"}})
    applied = feed.apply([feed.message("tele/plug1/SENSOR", wrong, T0 + 2)])
    assert _reasons(applied) == ["not_numeric"]


def _value_source(**extra: object) -> dict:
    return {"name": "plant", "topic": "plant/{asset}/{sensor}", "format": "value", **extra}


def test_values_with_their_own_time_join_on_it(make):
    """`{"value": x, "ts": t}` per sensor topic: joined on the payload's time, which the
    reading keeps (the same times as one JSON object would give)."""
    feed = Feed(make([_value_source(timestamps={"policy": "payload_else_received"})]))
    messages = [
        feed.message(f"plant/p1/{name}", json.dumps({"value": mean, "ts": T0 + second}), T0 + 9)
        for second in range(2)
        for name, mean in zip(feed.sensors, feed.means, strict=True)
    ]
    applied = feed.apply(messages)
    assert _readings(applied) == [("p1", T0, feed.means), ("p1", T0 + 1, feed.means)]


def test_values_one_per_topic_are_joined_into_one_reading(make):
    feed = Feed(make([_value_source()]))
    messages = [
        feed.message(f"plant/p1/{name}", str(mean), T0 + j * 0.01)
        for j, (name, mean) in enumerate(zip(feed.sensors, feed.means, strict=True))
    ]
    first = feed.apply(messages[:-1])
    assert _readings(first) == [] and first.batch.joins and not first.batch.dead
    second = feed.apply(messages[-1:])
    assert _readings(second) == [("p1", T0, feed.means)]
    assert second.batch.joins == [("p1", None)], "nothing waits any more"


def test_same_value_twice_is_two_readings_when_stamped_on_receipt(make):
    """A bare number carries no time: the same bytes twice are two readings, not a copy."""
    feed = Feed(make([_value_source()]))
    for second in range(2):
        applied = feed.apply(
            [
                feed.message(f"plant/p1/{name}", str(mean), T0 + second + j * 0.01)
                for j, (name, mean) in enumerate(zip(feed.sensors, feed.means, strict=True))
            ]
        )
        assert len(_readings(applied)) == 1 and applied.copies == 0


def test_a_redelivered_value_is_a_copy(make):
    feed = Feed(make([_value_source()]))
    first = feed.message("plant/p1/" + feed.sensors[0], "1.5", T0)
    feed.apply([first])
    again = first._replace(dup=True, received_at=T0 + 9)
    assert feed.apply([again]).copies == 1


def test_a_missing_sensor_waits_join_wait_s_then_is_rejected_or_imputed(make):
    feed = Feed(make([_value_source(join_wait_s=2.0)]))
    some = [
        feed.message(f"plant/p1/{name}", str(mean), T0 + j * 0.01)
        for j, (name, mean) in enumerate(zip(feed.sensors[:-1], feed.means, strict=False))
    ]
    assert _readings(feed.apply(some)) == []
    assert _readings(feed.apply([], now=T0 + 1.9)) == [], "not yet due"
    timed_out = feed.apply([], now=T0 + 2.5)
    assert _reasons(timed_out) == ["missing_sensor"]
    imputing = Feed(make([_value_source(join_wait_s=2.0)], missing_sensor="impute"))
    imputing.apply([imputing.message(m.topic, m.payload, m.received_at) for m in some])
    (reading,) = _readings(imputing.apply([], now=T0 + 2.5))
    assert reading[2][-1] == pytest.approx(imputing.means[-1])


def test_hostile_values_are_dead_letters_and_state_stays_bounded(make):
    feed = Feed(make([_value_source()], max_assets=10))
    sensor = feed.sensors[0]
    bad = {
        b"abc": "not_numeric",
        b"nan": "not_finite",
        b"1e999": "not_finite",
        b"true": "not_numeric",
        b"": "empty",
        b"9" * 100: "oversized",
        b"\xff\xfe": "not_numeric",
        b'{"v": 1}': "missing_sensor",
        b'{"value": "1"}': "not_numeric",
    }
    applied = feed.apply([feed.message(f"plant/p1/{sensor}", k, T0) for k in bad])
    assert _reasons(applied) == list(bad.values())
    # A flood of made-up sensors and assets: counted, and no more than max_assets wait.
    flood = [feed.message(f"plant/p1/made_up_{n}", "1", T0 + n / 1e3) for n in range(50)]
    flood += [feed.message(f"plant/a{n}/{sensor}", "1", T0 + n / 1e3) for n in range(100)]
    applied = feed.apply(flood)
    reasons = _reasons(applied)
    assert reasons.count("unknown_sensor") == 50 and reasons.count("too_many_assets") == 90
    assert len(feed.pipeline.sources.joiner.waiting) == 10
    # One asset's own flood of times: at most MAX_WAITING readings wait.
    for n in range(50):
        feed.apply([feed.message(f"plant/a0/{sensor}", "1.0", T0 + 1000 + n * 2)])
    assert len(feed.pipeline.sources.joiner.waiting["a0"]) <= MAX_WAITING


def test_the_join_state_restored_is_the_committed_one(make):
    feed = Feed(make([_value_source()]))
    first = feed.message("plant/p1/" + feed.sensors[0], str(feed.means[0]), T0)
    joins = feed.apply([first]).batch.joins
    restarted = Feed(make([_value_source()]))
    restarted.pipeline.restore([], [(a, w) for a, w in joins if w is not None])
    rest = [
        restarted.message(f"plant/p1/{name}", str(mean), T0 + 0.01 * (j + 1))
        for j, (name, mean) in enumerate(zip(feed.sensors[1:], feed.means[1:], strict=True))
    ]
    assert _readings(restarted.apply(rest)) == [("p1", T0, feed.means)]


def test_receipt_times_stay_after_the_asset_clock_when_the_gateway_clock_steps_back(make):
    feed = Feed(make([_value_source()]))

    def reading(received: float) -> list[Message]:
        return [
            feed.message(f"plant/p1/{name}", str(mean), received + j * 0.01)
            for j, (name, mean) in enumerate(zip(feed.sensors, feed.means, strict=True))
        ]

    assert _readings(feed.apply(reading(T0 + 100)))[0][1] == pytest.approx(T0 + 100)
    stepped_back = feed.apply(reading(T0 + 50))
    ((_, ts, _),) = _readings(stepped_back)
    assert ts > T0 + 100 and not stepped_back.batch.dead


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ('topic = "a/{asset}/#/b"', "whole levels"),
        ('topic = "a/x{asset}"', "binding is a whole level"),
        ('topic = "a/{asset}/{asset}"', "appears twice"),
        ('topic = "a/b"', "give the asset"),
        ('topic = "a/{asset}"\nformat = "value"', "{sensor}"),
        ('topic = "a/{asset}"\nformat = "csv"', "unknown format"),
        ('topic = "a/{asset}"\n[ingest.sources.timestamps]\nzone = "Mars/Base"', "IANA"),
        ('topic = "a/{asset}"\nsensors = { nope = "x" }', "not among the model's sensors"),
    ],
)
def test_a_bad_source_fails_check_config_naming_the_field(
    tmp_path: Path, model_path: Path, source: str, complaint: str
):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[device]\nid = "g"\n[upstream]\n[model]\npath = "{model_path}"\n[storage]\n'
        f'data_dir = "d"\n[[ingest.sources]]\nname = "s"\n{source}\n'
    )
    result = run_cli("agent", "check-config", str(config))
    assert result.returncode == 2 and "ingest.sources" in result.stderr
    assert complaint in result.stderr


def test_a_naive_time_in_the_repeated_hour_is_its_second_pass_once_the_first_is_past():
    stamper = Stamper(TimestampConfig(zone="America/New_York"))
    first = stamper.stamp("2025-11-02T01:30:00", 0.0)
    assert first == 1762061400.0  # 05:30Z, EDT
    # The asset's clock already went past the first pass: the second, an hour later (EST).
    assert stamper.stamp("2025-11-02T01:30:00", 0.0, after=first) == first + 3600
    assert stamper.stamp("2025-11-02T01:00:00", 0.0, after=first + 1) == first + 1800
    # Past both passes: the first, which the pipeline then rejects as out of order.
    assert stamper.stamp("2025-11-02T01:30:00", 0.0, after=first + 3600) == first
    # Times that are not ambiguous are what they are, whatever came before.
    assert stamper.stamp("2025-11-02T03:00:00", 0.0, after=2e9) == 1762070400.0
    # The hour a spring-forward skips is never moved back before `after`.
    gap = stamper.stamp("2025-03-09T02:30:00", 0.0)
    assert stamper.stamp("2025-03-09T02:30:00", 0.0, after=gap) == gap
