"""The ingest stage: every kind of bad input is a dead letter with its reason, never a crash."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import IngestConfig
from agent.ingest import REASONS, Parser, Readings

SENSORS = ["flow", "Volume Flow RateRMS"]
MEANS = [10.0, 20.0]
PREFIX = "edge/gw/readings/"
GOOD = {"ts": 1767225600, "flow": 1.5, "Volume Flow RateRMS": 2.5}


def _parser(**config: object) -> Parser:
    return Parser(SENSORS, PREFIX, IngestConfig(**config), MEANS)


def _parse(payload: bytes | str, topic: str = PREFIX + "pump-1", **config: object):
    data = payload.encode() if isinstance(payload, str) else payload
    return _parser(**config).parse(topic, data, 0.0)


def _reasons(payload: bytes | str, **config: object) -> list[str]:
    return [d.reason for d in _parse(payload, **config)[1]]


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
        (json.dumps({**GOOD, "flow": {"a": {"b": {"c": {"d": 1}}}}}), "too_deep"),
        (b"42", "not_object"),
        (json.dumps({**GOOD, "ts": "yesterday"}), "bad_ts"),
        (json.dumps({**GOOD, "ts": "2026-01-01T00:00:00"}), "bad_ts"),
        (json.dumps({**GOOD, "ts": -5}), "bad_ts"),
        (json.dumps({**GOOD, "ts": 10**400}), "bad_ts"),
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


def test_oversized_payloads_are_not_read():
    assert _reasons(json.dumps({**GOOD, "pad": "x" * 200}), max_payload_bytes=100) == ["oversized"]


def test_topics_outside_the_readings_tree_and_unknown_assets():
    assert [d.reason for d in _parse(json.dumps(GOOD), topic="edge/gw/other")[1]] == ["bad_topic"]
    assert _reasons(json.dumps(GOOD), assets=["pump-2"]) == ["unknown_asset"]
    readings, dead = _parse(json.dumps(GOOD), assets=["pump-1"])
    assert len(readings) == 1 and not dead


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
        assert all(math.isfinite(t) and t >= 0 for t in block.ts)
        assert [len(row) for row in block.values] == [len(SENSORS)] * len(block.ts)
        assert all(math.isfinite(v) for row in block.values for v in row)
    for letter in dead:
        assert letter.reason in REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_parsed_or_dead_lettered(payload):
    _check_outcome(*_parse(payload))


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
