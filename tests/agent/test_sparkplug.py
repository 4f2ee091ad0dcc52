"""The Sparkplug B decoder: births, report by exception, aliases, sequence numbers, rebirth
requests, and what hostile publishers send."""

from __future__ import annotations

import tracemalloc

import pytest

from agent.config import IngestConfig, SparkplugConfig
from agent.sparkplug import schema
from agent.sparkplug.decoder import ALIAS_BUDGET, REBIRTH_METRIC, Decoder, parse_topic
from agent.sparkplug.edge import EdgeNode

SENSORS = ["flow", "pressure"]
NOW = 1_800_000_000.0
T0 = int(NOW * 1000) - 60_000


def decoder(**options: object) -> Decoder:
    """A decoder whose rebirth pacing sees a clock that stands still."""
    ingest = IngestConfig(**{k: v for k, v in options.items() if k in IngestConfig.model_fields})
    spb = SparkplugConfig(**{k: v for k, v in options.items() if k in SparkplugConfig.model_fields})
    metrics = options.get("metrics")
    return Decoder(SENSORS, spb, ingest, [10.0, 20.0], metrics, clock=lambda: 100.0)


def born(dec: Decoder, node: EdgeNode, device: str = "pump-1") -> None:
    for topic, payload in (node.node_birth(T0), node.device_birth(device, T0, [1.0, 2.0])):
        assert dec.parse(topic, payload, NOW) == ([], [])


def reasons(result: tuple[list, list]) -> list[str]:
    return [d.reason for d in result[1]]


def rebirths(dec: Decoder) -> list[str]:
    out = []
    for topic, payload in dec.take_requests():
        request = schema.Payload.FromString(payload)
        assert [(m.name, m.boolean_value) for m in request.metrics] == [(REBIRTH_METRIC, True)]
        out.append(topic)
    return out


def test_report_by_exception_builds_full_readings() -> None:
    dec, node = decoder(), EdgeNode("plant", "gw", ["flow", "pressure"])
    born(dec, node)
    readings, dead = dec.parse(*node.device_data("pump-1", T0 + 1000, {"pressure": 5.0}), NOW)
    assert dead == []
    assert [(r.asset, r.ts, r.values) for r in readings] == [
        ("pump-1", [(T0 + 1000) / 1000], [[1.0, 5.0]])
    ]
    readings, _ = dec.parse(*node.device_data("pump-1", T0 + 2000, {"flow": 7.0}, False), NOW)
    assert readings[0].values == [[7.0, 5.0]]
    assert rebirths(dec) == []


def test_metric_names_map_to_sensors() -> None:
    dec = decoder(metrics={"Inputs/Flow": "flow"})
    node = EdgeNode("plant", "gw", ["Inputs/Flow", "pressure", "Other"])
    dec.parse(*node.node_birth(T0), NOW)
    dec.parse(*node.device_birth("p", T0, [1.0, 2.0, 3.0]), NOW)
    readings, _ = dec.parse(*node.device_data("p", T0 + 1, {"Inputs/Flow": 4.0, "Other": 9}), NOW)
    assert readings[0].values == [[4.0, 2.0]]


@pytest.mark.parametrize(
    ("datatype", "field", "raw", "value"),
    [
        (schema.INT16, "int_value", (1 << 32) - 3, -3.0),  # sign-extended to 32 bits
        (schema.INT16, "int_value", (1 << 16) - 3, -3.0),  # masked to 16 bits
        (schema.INT8, "int_value", 127, 127.0),
        (schema.INT64, "long_value", (1 << 64) - 1, -1.0),
        (schema.UINT32, "int_value", (1 << 32) - 1, float((1 << 32) - 1)),
        (schema.BOOLEAN, "boolean_value", True, 1.0),
    ],
)
def test_integers(datatype: int, field: str, raw: int, value: float) -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"])
    born(dec, node)
    payload = schema.Payload(timestamp=T0 + 5, seq=node.seq + 1)
    payload.metrics.add(alias=1, datatype=datatype, **{field: raw})
    readings, dead = dec.parse(node.topic("DDATA", "pump-1"), payload.SerializeToString(), NOW)
    assert dead == [] and readings[0].values == [[value, 2.0]]


def test_metric_timestamp_wins_and_several_times_give_several_readings() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"])
    born(dec, node)
    payload = schema.Payload(timestamp=T0 + 9000, seq=node.seq + 1)
    payload.metrics.add(alias=1, timestamp=T0 + 2000, datatype=schema.DOUBLE, double_value=3.0)
    payload.metrics.add(alias=2, timestamp=T0 + 1000, datatype=schema.DOUBLE, double_value=4.0)
    readings, _ = dec.parse(node.topic("DDATA", "pump-1"), payload.SerializeToString(), NOW)
    assert [(r.ts, r.values) for r in readings] == [
        ([(T0 + 1000) / 1000], [[1.0, 4.0]]),
        ([(T0 + 2000) / 1000], [[3.0, 4.0]]),
    ]


def test_data_without_birth_is_dead_and_asks_for_rebirth_rate_limited() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"])
    node.node_birth(T0)  # not seen by the decoder
    for _ in range(5):
        assert reasons(dec.parse(*node.device_data("d", T0, {"flow": 1.0}), NOW)) == [
            "sparkplug_no_birth"
        ]
    assert rebirths(dec) == ["spBv1.0/g/NCMD/n"]
    assert dec.stats.rebirths_suppressed == 4


def test_device_without_birth_asks_for_rebirth() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"])
    dec.parse(*node.node_birth(T0), NOW)
    assert reasons(dec.parse(*node.device_data("d", T0, {"flow": 1.0}), NOW)) == [
        "sparkplug_no_birth"
    ]
    assert rebirths(dec) == ["spBv1.0/g/NCMD/n"]


def test_alias_never_born() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"])
    born(dec, node)
    payload = schema.Payload(timestamp=T0, seq=node.seq + 1)
    payload.metrics.add(alias=99, datatype=schema.DOUBLE, double_value=1.0)
    result = dec.parse(node.topic("DDATA", "pump-1"), payload.SerializeToString(), NOW)
    assert reasons(result) == ["sparkplug_unknown_alias"]
    assert rebirths(dec) == ["spBv1.0/g/NCMD/n"]


def test_sequence_gap_and_wrap() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"])
    born(dec, node)
    for i in range(300):  # wraps 255 -> 0 with no gap
        readings, dead = dec.parse(*node.device_data("pump-1", T0 + i, {"flow": i}), NOW)
        assert dead == [] and len(readings) == 1
    assert dec.stats.sequence_gaps == 0 and rebirths(dec) == []
    node.seq += 3  # three messages lost
    readings, dead = dec.parse(*node.device_data("pump-1", T0 + 400, {"flow": 1.0}), NOW)
    assert len(readings) == 1 and dead == []  # the data itself is still read
    assert dec.stats.sequence_gaps == 1 and rebirths(dec) == ["spBv1.0/g/NCMD/n"]


def test_death_forgets_and_stale_death_does_not() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"], bd_seq=4)
    born(dec, node)
    stale = EdgeNode("g", "n", [], bd_seq=3)
    dec.parse(*stale.node_death(), NOW)  # the Last Will of an older session
    assert dec.parse(*node.device_data("pump-1", T0 + 1, {"flow": 1.0}), NOW)[1] == []
    dec.parse(*node.node_death(), NOW)
    assert reasons(dec.parse(*node.device_data("pump-1", T0 + 2, {"flow": 1.0}), NOW)) == [
        "sparkplug_no_birth"
    ]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("spBv1.0/g/DDATA/n", b"", "bad_topic"),  # DDATA without a device
        ("spBv1.0/g/XDATA/n/d", b"", "bad_topic"),
        ("spBv1.0/g/DDATA/n/d/extra", b"", "bad_topic"),
        ("spBv1.0/g#/DDATA/n/d", b"", "bad_topic"),
        ("spBv1.0/g/NBIRTH/n", b"\xff\xff\xff\xff", "sparkplug_bad_payload"),
        ("spBv1.0/g/NBIRTH/n", b"\x0a" * 10, "sparkplug_bad_payload"),
        ("spBv1.0/g/NBIRTH/n", b"\x00" * 70_000, "oversized"),
    ],
)
def test_garbage(topic: str, payload: bytes, reason: str) -> None:
    assert reasons(decoder().parse(topic, payload, NOW)) == [reason]


def test_wrong_types_and_values() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"])
    born(dec, node)
    cases = [
        ({"string_value": "high"}, "not_numeric"),
        ({"bytes_value": b"\x00"}, "not_numeric"),
        ({"is_null": True}, "not_numeric"),
        ({"double_value": float("nan")}, "not_finite"),
        ({"float_value": float("inf")}, "not_finite"),
    ]
    for value, reason in cases:
        payload = schema.Payload(timestamp=T0 + 1, seq=(node.seq + 1) % 256)
        node.seq = payload.seq
        payload.metrics.add(alias=1, datatype=schema.DOUBLE, **value)
        result = dec.parse(node.topic("DDATA", "pump-1"), payload.SerializeToString(), NOW)
        assert reasons(result) == [reason], value


def test_future_and_missing_sensors() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"])
    dec.parse(*node.node_birth(T0), NOW)
    birth = schema.Payload(timestamp=T0, seq=node.seq + 1)
    node.seq += 1
    birth.metrics.add(name="flow", alias=1, datatype=schema.DOUBLE, double_value=1.0)
    birth.metrics.add(name="pressure", alias=2, datatype=schema.DOUBLE, is_null=True)
    dec.parse(node.topic("DBIRTH", "d"), birth.SerializeToString(), NOW)
    assert reasons(dec.parse(*node.device_data("d", T0 + 1, {"flow": 2.0}), NOW)) == [
        "missing_sensor"
    ]
    future = int((NOW + 3600) * 1000)
    assert reasons(dec.parse(*node.device_data("d", future, {"flow": 2.0}), NOW)) == ["future_ts"]
    imputing = decoder(missing_sensor="impute")
    node2 = EdgeNode("g", "m", ["flow", "pressure"])
    imputing.parse(*node2.node_birth(T0), NOW)
    imputing.parse(node2.topic("DBIRTH", "d"), birth.SerializeToString(), NOW)
    node2.seq += 1
    readings, _ = imputing.parse(*node2.device_data("d", T0 + 1, {"flow": 2.0}), NOW)
    assert readings[0].values == [[2.0, 20.0]] and readings[0].imputed == ("pressure",)


def test_oversized_birth() -> None:
    dec = decoder(max_metrics=4)
    node = EdgeNode("g", "n", [f"m{i}" for i in range(5)])
    dec.parse(*node.node_birth(T0), NOW)
    assert reasons(dec.parse(*node.device_birth("d", T0, [0.0] * 5), NOW)) == [
        "sparkplug_oversized_birth"
    ]


def test_commands_and_host_states_are_not_readings() -> None:
    dec = decoder()
    assert dec.parse("spBv1.0/plant/NCMD/n", b"\xff", NOW) == ([], [])
    assert dec.parse("spBv1.0/plant/DCMD/n/d", b"\xff", NOW) == ([], [])
    assert dec.parse("spBv1.0/STATE/scada-1", b'{"online": true}', NOW) == ([], [])


def test_a_flood_of_nodes_and_devices_stays_bounded() -> None:
    """Made-up node and device ids, each born with the most metrics allowed: state stays
    within max_nodes x max_devices births, rebirth requests within the global rate, and a node
    pushed out is asked to rebirth when it speaks again."""
    dec = decoder(max_nodes=20, max_devices=5, max_metrics=50)
    names = [f"metric-{i}" for i in range(50)]
    tracemalloc.start()
    for n in range(200):
        node = EdgeNode("g", f"node-{n}", names)
        dec.parse(*node.node_birth(T0), NOW)
        for d in range(20):
            dec.parse(*node.device_birth(f"dev-{d}", T0, [1.0] * 50), NOW)
        dec.parse(*EdgeNode("g", f"stranger-{n}", names).device_data("x", T0, {}), NOW)
        if n == 50:
            plateau = tracemalloc.get_traced_memory()[0]
    grown = tracemalloc.get_traced_memory()[0] - plateau
    tracemalloc.stop()
    assert len(dec.nodes) == 20
    assert all(len(node.devices) <= 5 for node in dec.nodes.values())
    assert len(dec._asked) <= 20
    assert len(dec.take_requests()) == 20  # the burst the global limit allows, clock stopped
    assert grown < 200_000, grown  # after the plateau: evictions keep it flat
    assert dec.stats.nodes_evicted == 180


def test_a_flood_of_births_does_not_push_out_a_node_that_reports() -> None:
    dec = decoder(max_nodes=4, max_devices=2)
    honest = EdgeNode("g", "honest", ["flow", "pressure"])
    born(dec, honest)
    assert dec.parse(*honest.device_data("pump-1", T0 + 1, {"flow": 3.0}), NOW)[1] == []
    for n in range(100):
        fake = EdgeNode("g", f"fake-{n}", ["flow", "pressure"])
        dec.parse(*fake.node_birth(T0), NOW)
        dec.parse(*fake.device_birth("pump-1", T0, [0.0, 0.0]), NOW)
        for d in range(5):
            dec.parse(*honest.device_birth(f"extra-{n}-{d}", T0, [0.0, 0.0]), NOW)
    readings, dead = dec.parse(*honest.device_data("pump-1", T0 + 2, {"flow": 4.0}), NOW)
    assert dead == [] and readings[0].values == [[4.0, 2.0]]
    assert len(dec.nodes) == 4 and len(dec.nodes[("g", "honest")].devices) == 2


def test_topic_parse() -> None:
    assert parse_topic("spBv1.0/g/DDATA/n/d").device == "d"
    assert parse_topic("spBv1.0/g/NDATA/n").device is None
    assert parse_topic("spBv1.0/g/NDATA/n/d") is None
    assert parse_topic("other/g/NDATA/n") is None


def test_as_a_source_format() -> None:
    """`format = "sparkplug_b"` in `[[ingest.sources]]`: rows in seconds with the sensors
    known so far, dead letters as reasons, rebirth requests as replies."""
    from agent.config import SourceConfig
    from agent.sources import Incoming, Seconds
    from agent.sources.registry import decoder_factory

    source = SourceConfig(
        name="plc",
        topic="spBv1.0/plant/#",
        format="sparkplug_b",
        sensors={"flow": "Inputs/Flow"},
        sparkplug=SparkplugConfig(asset="node_device"),
    )
    dec = decoder_factory("sparkplug_b")(source, SENSORS, IngestConfig())
    node = EdgeNode("plant", "gw", ["Inputs/Flow", "pressure"])

    def send(message: tuple[str, bytes]):
        return dec.decode(Incoming(message[0], None, None, message[1], NOW))

    early = send(node.device_data("p1", T0, {"pressure": 1.0}, by_alias=False))
    assert early.dead == [("sparkplug_no_birth", "no NBIRTH from plant/gw")]
    assert [r.topic for r in early.replies] == ["spBv1.0/plant/NCMD/gw"]
    node.seq = -1
    assert send(node.node_birth(T0)).rows == []
    send(node.device_birth("p1", T0, [1.0, 2.0]))
    decoded = send(node.device_data("p1", T0 + 500, {"Inputs/Flow": 3.0}))
    (row,) = decoded.rows
    assert (row.asset, row.values) == ("gw.p1", {"flow": 3.0, "pressure": 2.0})
    assert isinstance(row.ts, Seconds) and row.ts == (T0 + 500) / 1000
    assert decoded.dead == [] and decoded.replies == []


@pytest.mark.parametrize(
    "fields",
    [{"topic": "spBv1.0/{asset}/#"}, {"topic": "spBv1.0/plant/#", "asset": "a"}],
)
def test_a_sparkplug_source_takes_no_asset_binding(fields: dict) -> None:
    from pydantic import ValidationError

    from agent.config import SourceConfig

    with pytest.raises(ValidationError, match="sparkplug_b"):
        SourceConfig(name="plc", format="sparkplug_b", **fields)


def test_state_survives_a_snapshot() -> None:
    dec, node = decoder(), EdgeNode("g", "n", ["flow", "pressure"], bd_seq=7)
    born(dec, node)
    dec.parse(*node.device_data("pump-1", T0 + 1, {"flow": 5.0}), NOW)
    assert dec.changed
    kept = dec.snapshot()
    assert not dec.changed
    later = decoder()
    later.restore(kept)
    readings, dead = later.parse(*node.device_data("pump-1", T0 + 2, {"pressure": 6.0}), NOW)
    assert dead == [] and readings[0].values == [[5.0, 6.0]]
    assert later.stats.sequence_gaps == 0 and rebirths(later) == []
    later.parse(*node.node_death(), NOW)  # bdSeq 7 was kept: the death is the birth's
    assert later.nodes == {}


@pytest.mark.parametrize(
    "kept",
    [
        "",
        "{",
        "[]",
        '{"v": 99, "nodes": []}',
        '{"v": 1, "nodes": [[1, 2]]}',
        "null",
        "[" * 100_000,  # past the recursion limit
        '{"v": 1, "nodes": [["g", "n", null, 1, {}, [], {"a": {"flow": 1' + "0" * 400 + "}}]]}",
        '{"v": 1, "nodes": [["g", "n", null, 1e400, {}, [], {}]]}',
        '{"v": 1, "nodes": [["g", "n", null, 1, {}, [], {"a": {"flow": NaN}}]]}',
        '{"v": 1, "nodes": [["g", "n", null, 1, {}, [], {"a": {"flow": -Infinity}}]]}',
    ],
)
def test_a_damaged_snapshot_is_no_state(kept: str) -> None:
    dec = decoder()
    dec.restore(kept)
    assert dec.nodes == {}


def test_the_snapshot_is_bounded_and_holds_only_nodes_that_reported() -> None:
    dec = decoder(max_nodes=50, max_devices=4, max_metrics=512)
    names = [f"a-rather-long-metric-name-{i}" for i in range(512)]
    for n in range(50):
        node = EdgeNode("g", f"n{n}", names)
        dec.parse(*node.node_birth(T0), NOW)
        for d in range(4):
            dec.parse(*node.device_birth(f"d{d}", T0, [1.0] * 512), NOW)
        if n % 2:
            dec.parse(*node.device_data("d0", T0 + 1, {names[0]: 2.0}), NOW)
    kept = dec.snapshot()
    from agent.sparkplug import state

    assert len(kept) <= state.MAX_BYTES + 100
    restored = decoder(max_nodes=50)
    restored.restore(kept)
    assert 0 < len(restored.nodes) <= 25
    assert all(int(name[1:]) % 2 for _, name in restored.nodes)


def test_a_new_node_gets_in_when_every_place_holds_a_node_that_reports() -> None:
    dec = decoder(max_nodes=3, max_devices=1)
    nodes = [EdgeNode("g", f"n{i}", ["flow", "pressure"]) for i in range(4)]
    for node in nodes[:3]:
        born(dec, node)
        assert dec.parse(*node.device_data("pump-1", T0 + 1, {"flow": 1.0}), NOW)[1] == []
    born(dec, nodes[3])  # the node silent longest (n0) makes room, not the newcomer
    assert dec.parse(*nodes[3].device_data("pump-1", T0 + 1, {"flow": 1.0}), NOW)[1] == []
    assert set(dec.nodes) == {("g", "n1"), ("g", "n2"), ("g", "n3")}
    dec.parse(*nodes[3].device_birth("pump-2", T0, [1.0, 2.0]), NOW)  # n3's second device
    assert list(dec.nodes[("g", "n3")].devices) == ["pump-2"]


def test_births_with_the_largest_alias_tables_allowed_stay_within_the_budget() -> None:
    """max_nodes x max_devices x max_metrics at their defaults let a publisher of births make
    the decoder hold 256 x 65 tables of 512 names: measured 50 MiB per 8 such nodes (over
    1.5 GiB at 256). The tables together now stay within ALIAS_BUDGET, and a node that
    reports before the flood is still read after it."""
    dec = decoder()
    honest = EdgeNode("g", "honest", ["flow", "pressure"])
    born(dec, honest)
    assert dec.parse(*honest.device_data("pump-1", T0 + 1, {"flow": 3.0}), NOW)[1] == []
    names = [f"{'x' * 100}{i:03d}" for i in range(512)]
    tracemalloc.start()
    for n in range(12):
        fake = EdgeNode("g", f"fake-{n}", names)
        dec.parse(*fake.node_birth(T0), NOW)
        for d in range(64):
            dec.parse(*fake.device_birth(f"d{d}", T0, [1.0] * 512), NOW)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert held < 1.5 * ALIAS_BUDGET, held
    assert dec.stats.nodes_evicted > 0
    readings, dead = dec.parse(*honest.device_data("pump-1", T0 + 2, {"flow": 4.0}), NOW)
    assert dead == [] and readings[0].values == [[4.0, 2.0]]
