"""The ingest stage: every kind of bad input is a dead letter with its reason, never a crash."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import IngestConfig
from agent.ingest import MAX_TS, REASONS, Parser, Readings

SENSORS = ["flow", "Volume Flow RateRMS"]
MEANS = [10.0, 20.0]
PREFIX = "edge/gw/readings/"
GOOD = {"ts": 1767225600, "flow": 1.5, "Volume Flow RateRMS": 2.5}
NOW = GOOD["ts"] + 60.0  # the gateway's clock when a payload arrives


def _parser(**config: object) -> Parser:
    return Parser(SENSORS, PREFIX, IngestConfig(**config), MEANS)


def _parse(payload: bytes | str, topic: str = PREFIX + "pump-1", **config: object):
    data = payload.encode() if isinstance(payload, str) else payload
    return _parser(**config).parse(topic, data, NOW)


def _reasons(payload: bytes | str, **config: object) -> list[str]:
    return [d.reason for d in _parse(payload, **config)[1]]


def _nested(levels: int) -> object:
    """A value that is `levels` objects deep."""
    value: object = 1.0
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"[]", "empty"),
        (b"\xff\xfe\x00garbage", "binary"),
        (b"{not json", "invalid_json"),
        (b"[" * 30_000 + b"]" * 30_000, "too_deep"),
        (json.dumps([[GOOD]]).encode(), "not_object"),
        (json.dumps({**GOOD, "flow": _nested(8)}), "too_deep"),
        # A deep array among scalars: the brackets cannot hide behind the item count.
        (json.dumps([GOOD, json.loads("[" * 9 + "]" * 9), *[0] * 20]), "too_deep"),
        (b"42", "not_object"),
        (json.dumps({**GOOD, "ts": "yesterday"}), "bad_ts"),
        (json.dumps({**GOOD, "ts": "2026-01-01T00:00:00"}), "bad_ts"),
        (json.dumps({**GOOD, "ts": -5}), "bad_ts"),
        (json.dumps({**GOOD, "ts": 10**400}), "bad_ts"),
        (json.dumps({**GOOD, "ts": GOOD["ts"] * 1000}), "bad_ts"),  # milliseconds
        (json.dumps({**GOOD, "ts": "1969-12-31T23:59:59Z"}), "bad_ts"),
        (json.dumps({**GOOD, "ts": "9999-12-31T23:59:59-05:00"}), "bad_ts"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "ts"}), "bad_ts"),
        (json.dumps({"ts": 1, "flow": 1.0}), "missing_sensor"),
        (json.dumps({**GOOD, "flow": "high"}), "not_numeric"),
        (json.dumps({**GOOD, "flow": True}), "not_numeric"),
        (json.dumps({**GOOD, "flow": None}), "not_numeric"),
        (json.dumps({**GOOD, "flow": float("nan")}), "not_finite"),
        (json.dumps({**GOOD, "flow": float("-inf")}), "not_finite"),
        (json.dumps({**GOOD, "flow": 10**400}), "not_finite"),
    ],
)
def test_each_kind_of_bad_input_has_its_reason(payload, reason):
    assert _reasons(payload) == [reason]
    assert reason in REASONS


@pytest.mark.parametrize(
    "payload",
    [b"[" * 30_000 + b"]" * 30_000, b"[" * 60_000, b'{"a":' * 12_000, b'[{"a":' * 10_000],
    ids=["balanced", "unclosed", "objects", "mixed"],
)
def test_60kb_of_nesting_is_too_deep_not_a_crash(payload):
    assert 60_000 <= len(payload) <= IngestConfig().max_payload_bytes
    assert _reasons(payload) == ["too_deep"]


def test_max_depth_is_the_deepest_accepted():
    item = {**GOOD, "meta": _nested(5)}  # ignored key; the array of readings is 7 deep
    assert len(_parse(json.dumps([item]), max_depth=7)[0]) == 1
    assert _reasons(json.dumps([item]), max_depth=6) == ["too_deep"]


def test_timestamps_up_to_the_last_second_of_9999_are_accepted():
    for ts in (0, MAX_TS, "9999-12-31T23:59:59Z"):
        readings, dead = _parse(json.dumps({**GOOD, "ts": ts}), max_future_s=MAX_TS)
        assert not dead and readings[0].ts == [MAX_TS if ts else 0]


@pytest.mark.parametrize(
    "ts", ["9000-01-01T00:00:00Z", NOW + 301, "2026-01-01T00:07:01Z"], ids=["9000", "301s", "iso"]
)
@pytest.mark.parametrize("in_array", [False, True], ids=["alone", "among_good_ones"])
def test_a_reading_beyond_max_future_s_is_future_ts_on_every_path(ts, in_array):
    """Alone it goes the item path; among clean readings the block path must refuse it too,
    and its neighbours stay (#13). The default bound is 300 s past the gateway clock."""
    assert datetime(2026, 1, 1, 0, 1, tzinfo=UTC).timestamp() == NOW
    future = {**GOOD, "ts": ts}
    items = [GOOD, future, {**GOOD, "ts": GOOD["ts"] + 1}] if in_array else future
    readings, dead = _parse(json.dumps(items))
    assert [d.reason for d in dead] == ["future_ts"]
    assert "ahead of the gateway clock" in dead[0].detail
    assert [t for r in readings for t in r.ts] == ([GOOD["ts"], GOOD["ts"] + 1] if in_array else [])


def test_max_future_s_is_the_latest_accepted():
    at_bound = json.dumps([{**GOOD, "ts": NOW + 300}, {**GOOD, "ts": NOW + 300.5}])
    readings, dead = _parse(at_bound)
    assert [r.ts for r in readings] == [[NOW + 300]] and [d.reason for d in dead] == ["future_ts"]
    assert len(_parse(at_bound, max_future_s=301)[0][0].ts) == 2, "one block of two"


def test_oversized_payloads_are_not_read():
    assert _reasons(json.dumps({**GOOD, "pad": "x" * 200}), max_payload_bytes=100) == ["oversized"]


@pytest.mark.parametrize(
    "asset", ["", "a/b", "a+b", "a#", "pump\x00", "pump\n", "pump 1", "x" * 65, "$SYS"]
)
def test_an_asset_that_cannot_go_into_a_topic_is_a_bad_topic(asset: str):
    """The asset names the alert topic: wildcards, separators, NUL or 65 characters cannot."""
    dead = _parse(json.dumps(GOOD), topic=f"edge/gw/readings/{asset}")[1]
    assert [d.reason for d in dead] == ["bad_topic"]
    assert "1 to 64 of" in dead[0].detail


def test_an_asset_of_64_characters_is_fine():
    readings, dead = _parse(json.dumps(GOOD), topic=f"edge/gw/readings/{'x' * 64}")
    assert not dead and readings[0].asset == "x" * 64


def test_topics_outside_the_readings_tree_and_unknown_assets():
    assert [d.reason for d in _parse(json.dumps(GOOD), topic="edge/gw/other")[1]] == ["bad_topic"]
    assert _reasons(json.dumps(GOOD), assets=["pump-2"]) == ["unknown_asset"]
    readings, dead = _parse(json.dumps(GOOD), assets=["pump-1"])
    assert len(readings) == 1 and not dead


def test_every_listed_asset_must_fit_in_max_assets():
    with pytest.raises(ValueError, match="max_assets must be at least"):
        IngestConfig(assets=["pump-1", "pump-2"], max_assets=1)
    assert IngestConfig(assets=["pump-1", "pump-2"], max_assets=2).max_assets == 2


def test_one_bad_item_does_not_cost_its_neighbours():
    payload = json.dumps([GOOD, {**GOOD, "flow": "x"}, {**GOOD, "ts": GOOD["ts"] + 1}])
    readings, dead = _parse(payload)
    assert [r.ts for r in readings] == [[GOOD["ts"]], [GOOD["ts"] + 1]]
    assert [(d.reason, d.detail.split(":")[0]) for d in dead] == [("not_numeric", "item 1")]


def test_sensor_names_are_matched_as_they_are():
    readings, _ = _parse(json.dumps(GOOD))
    assert readings[0].values == [[1.5, 2.5]]
    assert _reasons(json.dumps({"ts": 1, "flow": 1.0, "volume flow raterms": 2.0})) == [
        "missing_sensor"
    ]


def test_impute_fills_a_missing_sensor_with_its_training_mean():
    readings, dead = _parse(json.dumps({"ts": 5, "flow": 1.0}), missing_sensor="impute")
    assert not dead and readings[0].values == [[1.0, 20.0]]
    assert readings[0].imputed == ("Volume Flow RateRMS",)
    assert _reasons(json.dumps({"ts": 5}), missing_sensor="impute") == ["missing_sensor"]
    assert _reasons(json.dumps({**GOOD, "flow": "x"}), missing_sensor="impute") == ["not_numeric"]


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(["ts", *SENSORS, "x"]) | st.text(max_size=5), children)
    ),
    max_leaves=30,
)


def _check_outcome(readings: list[Readings], dead: list) -> None:
    for block in readings:
        assert all(0 <= t <= NOW + IngestConfig().max_future_s for t in block.ts)
        for t in block.ts:
            datetime.fromtimestamp(t, UTC).isoformat()  # as an alert shows it: never raises
        assert [len(row) for row in block.values] == [len(SENSORS)] * len(block.ts)
        assert all(math.isfinite(v) for row in block.values for v in row)
    for letter in dead:
        assert letter.reason in REASONS


# Bytes that look like JSON reach further into the parser than random ones.
_JSONISH = st.text(alphabet='[]{}",:0123456789.eE+- tsflowNaIifyrun\\', max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | _JSONISH.map(str.encode))
def test_any_bytes_are_parsed_or_dead_lettered(payload):
    _check_outcome(*_parse(payload))


# Fixed offsets, not zone names: no tz database needed, and the year-9999 edges are reached.
_OFFSETS = st.integers(-24 * 60 + 1, 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
_TS = (
    st.floats()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.datetimes(timezones=_OFFSETS).map(datetime.isoformat)
    | st.text(max_size=30)
)


@settings(max_examples=300, deadline=None)
@given(_TS)
def test_any_ts_is_a_time_an_alert_can_show_or_bad_ts(ts):
    readings, dead = _parse(json.dumps({**GOOD, "ts": ts}))
    _check_outcome(readings, dead)
    assert [d.reason for d in dead] in ([], ["bad_ts"], ["future_ts"])
    assert all(t <= NOW + IngestConfig().max_future_s for r in readings for t in r.ts)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_any_json_value_is_parsed_or_dead_lettered(value):
    _check_outcome(*_parse(json.dumps(value)))


@settings(max_examples=200, deadline=None)
@given(st.lists(_JSON | st.fixed_dictionaries({"ts": st.integers(0, 10**10)}), max_size=6))
def test_every_item_of_an_array_is_accounted_for(items):
    readings, dead = _parse(json.dumps(items), missing_sensor="impute")
    _check_outcome(readings, dead)
    deep = any(r.reason == "too_deep" for r in dead)
    assert deep or sum(len(r.ts) for r in readings) + len(dead) == max(len(items), 1)
