"""Sparkplug B messages → readings: births declare, data reports, deaths forget.

Sparkplug edge nodes publish protobuf payloads on `spBv1.0/<group>/<type>/<node>[/<device>]`.
A node's NBIRTH (and each device's DBIRTH) names every metric, with its alias and current
value; NDATA/DDATA then send only what changed, often by alias alone. So a reading is built from
the last known value of each model sensor, updated by each data message, and stamped with the
metric's (else the payload's, else the arrival) time in milliseconds since the epoch.

What cannot be read — a data message from a node or device with no birth, an alias no birth
declared, a sequence number that skips — asks the node to publish its births again (NCMD
`Node Control/Rebirth`), at most once per `rebirth_interval_s` per node and _REBIRTHS_PER_S in
all; `take_requests` hands them to the session that publishes them. Everything kept is bounded:
`max_nodes` nodes (the one silent longest is forgotten first), `max_devices` per node,
`max_metrics` per birth, and the births' alias tables together to ALIAS_BUDGET bytes (those
three alone allowed 256 × 65 tables of 512 names, over a gigabyte, to a publisher of births).

`snapshot` and `restore` keep the state across restarts (agent.sparkplug.state): the runtime
writes it to the database now and then.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError

from agent.config import IDENTIFIER_PATTERN, IngestConfig, SparkplugConfig
from agent.ingest import MAX_TS, DeadLetter, Readings
from agent.logs import Throttle
from agent.sparkplug import schema, state

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
REBIRTH_METRIC = "Node Control/Rebirth"
_STATE = f"{NAMESPACE}/STATE/"
_REBIRTHS_PER_S = 20.0  # all nodes together: a flood of node ids cannot flood the broker
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
# What the alias tables of all births may hold together, as estimated by `_Scope.cost`: a
# gateway's share of memory (ample for 50 nodes of 64 devices of 20 metrics named in 40
# characters); past it the node silent longest (one never followed by data first) is forgotten.
ALIAS_BUDGET = 8 * 1024 * 1024
_ENTRY_BYTES = 100  # a dict entry, its int key and the name's str header, measured in CPython
K, V = TypeVar("K"), TypeVar("V")
_TYPES = {"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD"}


class Problem(Exception):
    """A message that yields no reading: its dead-letter reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class _Scope:
    """What one birth declared: alias -> metric name; and whether data followed it."""

    aliases: dict[int, str] = field(default_factory=dict)
    reported: bool = False
    cost: int = field(init=False)  # bytes the table holds, estimated (what ALIAS_BUDGET counts)

    def __post_init__(self) -> None:
        self.cost = sum(map(len, self.aliases.values())) + _ENTRY_BYTES * len(self.aliases)


@dataclass
class _Node:
    bd_seq: int | None
    seq: int
    scope: _Scope
    devices: OrderedDict[str, _Scope] = field(default_factory=OrderedDict)
    # Last value of each model sensor, per asset this node reports for (Sparkplug reports by
    # exception: a data message carries only what changed).
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    reported: bool = False  # a data message of the node or one of its devices came
    cost: int = 0  # its alias tables' (`recost` after they change)

    def recost(self) -> None:
        self.cost = self.scope.cost + sum(d.cost for d in self.devices.values())


@dataclass(frozen=True)
class Row:
    """One reading: asset, unix seconds, model sensor -> value (the sensors known so far)."""

    asset: str
    ts: float
    values: dict[str, float]


@dataclass(frozen=True)
class Topic:
    group: str
    kind: str
    node: str
    device: str | None


def parse_topic(topic: str) -> Topic | None:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[2] not in _TYPES:
        return None
    device = parts[4] if len(parts) == 5 else None
    if (device is None) != (parts[2][0] == "N"):
        return None
    if not all(
        _IDENTIFIER.fullmatch(p) for p in [parts[1], parts[3], *([device] if device else [])]
    ):
        return None
    return Topic(parts[1], parts[2], parts[3], device)


@dataclass
class Stats:
    sequence_gaps: int = 0
    rebirth_requests: int = 0
    rebirths_suppressed: int = 0  # wanted, but within the node's or the global rate limit
    nodes_evicted: int = 0
    devices_evicted: int = 0


class Decoder:
    def __init__(
        self,
        sensors: list[str],
        config: SparkplugConfig,
        ingest: IngestConfig,
        training_means: list[float],
        metrics: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`metrics`: metric name -> model sensor, for metrics not named like their sensor;
        `clock` (monotonic seconds) paces the rebirth requests."""
        self.sensors = sensors
        self.config = config
        self.clock = clock
        self.ingest = ingest
        self.means = dict(zip(sensors, training_means, strict=True))
        self.impute = ingest.missing_sensor == "impute"
        self.to_sensor = {name: name for name in sensors}
        self.to_sensor.update({k: v for k, v in (metrics or {}).items() if v in set(sensors)})
        self.nodes: OrderedDict[tuple[str, str], _Node] = OrderedDict()
        self.stats = Stats()
        self.changed = False  # the state changed since the last `snapshot`
        self._warn = Throttle(log)
        self._requests: list[tuple[str, bytes]] = []
        # Last rebirth request per node, bounded like the nodes (a node unknown here asks too).
        self._asked: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._tokens, self._refilled = _REBIRTHS_PER_S, clock()

    def snapshot(self) -> str:
        """The state to keep across a restart (agent.sparkplug.state)."""
        self.changed = False
        return state.dump(self.nodes)

    def restore(self, snapshot: str) -> None:
        self.nodes = state.load(snapshot)
        while len(self.nodes) > self.config.max_nodes:
            self.nodes.popitem(last=False)
        for node in self.nodes.values():
            node.recost()
        while self.nodes and sum(n.cost for n in self.nodes.values()) > ALIAS_BUDGET:
            self.nodes.popitem(last=False)
        self.changed = False

    def take_requests(self) -> list[tuple[str, bytes]]:
        """Rebirth requests (topic, payload) to publish on the local broker."""
        requests, self._requests = self._requests, []
        return requests

    def rows(
        self, topic: str, payload: bytes, received_at: float
    ) -> tuple[list[Row], tuple[str, str] | None]:
        """The readings one message gives, each with the last known value of every sensor
        (those never reported are absent), or why it gives none (reason, detail)."""
        try:
            return self._parse(topic, payload, received_at), None
        except Problem as problem:
            return [], (problem.reason, problem.detail)

    def parse(
        self, topic: str, payload: bytes, received_at: float
    ) -> tuple[list[Readings], list[DeadLetter]]:
        """As `rows`, as whole readings in the model's order (`ingest.missing_sensor` applied)."""
        rows, problem = self.rows(topic, payload, received_at)
        try:
            if problem is None:
                return [self._reading(row) for row in rows], []
        except Problem as missing:
            problem = (missing.reason, missing.detail)
        return [], [DeadLetter(topic, *problem, received_at, payload)]

    def _parse(self, topic: str, payload: bytes, received_at: float) -> list[Row]:
        if topic.startswith(_STATE):
            return []  # a host application's online state (Sparkplug 3.0), not an edge node's
        where = parse_topic(topic)
        if where is None:
            raise Problem("bad_topic", f"expected {NAMESPACE}/<group>/<type>/<node>[/<device>]")
        if where.kind in ("NCMD", "DCMD"):
            return []  # commands (our own rebirth requests among them) are not readings
        limit = self.ingest.max_payload_bytes
        if len(payload) > limit:
            raise Problem("oversized", f"{len(payload)} bytes > {limit}")
        try:
            message = schema.Payload.FromString(payload)
        except DecodeError as exc:
            raise Problem("sparkplug_bad_payload", f"not a Sparkplug B payload: {exc}") from None
        key = (where.group, where.node)
        self.changed = True
        if where.kind == "NBIRTH":
            self._node_birth(key, message)
            return []
        if where.kind == "NDEATH":
            self._node_death(key, message)
            return []
        node = self.nodes.get(key)
        if node is None:
            self._ask_rebirth(where, "no NBIRTH")
            raise Problem("sparkplug_no_birth", f"no NBIRTH from {where.group}/{where.node}")
        self.nodes.move_to_end(key)
        self._check_seq(where, node, message)
        if where.kind == "DBIRTH":
            self._device_birth(where, node, message)
            return []
        if where.kind == "DDEATH":
            node.devices.pop(where.device or "", None)
            node.values.pop(self._asset(where), None)
            node.recost()
            return []
        return self._data(where, node, message, received_at)

    def _node_birth(self, key: tuple[str, str], message: object) -> None:
        scope = self._scope(message)
        bd_seq = next(
            (_integer(m) for m in message.metrics if m.name == "bdSeq"),
            None,  # type: ignore[attr-defined]
        )
        self.nodes[key] = node = _Node(bd_seq, message.seq, scope)  # type: ignore[attr-defined]
        self.nodes.move_to_end(key)
        node.recost()
        where = Topic(key[0], "NBIRTH", key[1], None)
        self._born_values(where, node, message)
        while len(self.nodes) > self.config.max_nodes:
            self._evict_node(key)
        self._fit_budget(where, node)

    def _evict_node(self, key: tuple[str, str]) -> _Node:
        """Forget the node silent longest (one never followed by data first), never `key`."""
        node = self.nodes.pop(_evictable(self.nodes, lambda n: n.reported, key))
        self.stats.nodes_evicted += 1
        self._warn.warning(
            "evicted",
            "sparkplug: more than sparkplug.max_nodes (%d) edge nodes or their births past "
            "%d bytes; forgot the one silent longest (nodes_evicted=%d)",
            self.config.max_nodes,
            ALIAS_BUDGET,
            self.stats.nodes_evicted,
        )
        return node

    def _fit_budget(self, where: Topic, node: _Node) -> None:
        """After a birth: other nodes forgotten, then the node's other devices, until the
        alias tables fit ALIAS_BUDGET (the birth itself stays: one payload at most)."""
        key = (where.group, where.node)
        total = sum(n.cost for n in self.nodes.values())
        while total > ALIAS_BUDGET and len(self.nodes) > 1:
            total -= self._evict_node(key).cost
        while total > ALIAS_BUDGET and len(node.devices) > (where.device is not None):
            total -= self._evict_device(where, node).cost

    def _evict_device(self, where: Topic, node: _Node) -> _Scope:
        """Forget the node's device silent longest (one never followed by data first), never
        `where.device`."""
        gone = _evictable(node.devices, lambda scope: scope.reported, where.device)
        scope = node.devices.pop(gone)
        node.values.pop(self._asset(Topic(where.group, "DDATA", where.node, gone)), None)
        node.recost()
        self.stats.devices_evicted += 1
        return scope

    def _node_death(self, key: tuple[str, str], message: object) -> None:
        """Forget the node, unless the death is the Last Will of an older session (its bdSeq
        is not the one of the birth in force)."""
        node = self.nodes.get(key)
        bd_seq = next(
            (_integer(m) for m in message.metrics if m.name == "bdSeq"),
            None,  # type: ignore[attr-defined]
        )
        if node is not None and (node.bd_seq is None or bd_seq is None or bd_seq == node.bd_seq):
            del self.nodes[key]

    def _device_birth(self, where: Topic, node: _Node, message: object) -> None:
        device = where.device or ""
        node.devices[device] = self._scope(message)
        node.devices.move_to_end(device)
        node.recost()
        self._born_values(where, node, message)
        while len(node.devices) > self.config.max_devices:
            self._evict_device(where, node)
        self._fit_budget(where, node)

    def _scope(self, message: object) -> _Scope:
        metrics = message.metrics  # type: ignore[attr-defined]
        if len(metrics) > self.config.max_metrics:
            raise Problem(
                "sparkplug_oversized_birth",
                f"{len(metrics)} metrics > sparkplug.max_metrics {self.config.max_metrics}",
            )
        return _Scope({m.alias: m.name for m in metrics if m.HasField("alias") and m.name})

    def _born_values(self, where: Topic, node: _Node, message: object) -> None:
        """A birth carries every metric's current value: the start of report by exception.
        A value that is not a number is left unknown (the reading fails when it needs it)."""
        known: dict[str, float] = {}
        for metric in message.metrics:  # type: ignore[attr-defined]
            sensor = self.to_sensor.get(metric.name)
            if sensor is None:
                continue
            try:
                known[sensor] = _number(metric, sensor)
            except Problem:
                continue
        node.values[self._asset(where)] = known

    def _check_seq(self, where: Topic, node: _Node, message: object) -> None:
        """Every message of a node after its NBIRTH counts up 0..255, wrapping: a skip means
        something was lost, and the births are asked for again (the data is still read)."""
        seq = message.seq if message.HasField("seq") else None  # type: ignore[attr-defined]
        expected = (node.seq + 1) % 256
        if seq is not None:
            node.seq = seq
        if seq != expected:
            self.stats.sequence_gaps += 1
            self._ask_rebirth(where, f"seq {seq} after {(expected - 1) % 256}")

    def _data(self, where: Topic, node: _Node, message: object, received_at: float) -> list[Row]:
        scope = node.scope if where.device is None else node.devices.get(where.device)
        if scope is None:
            self._ask_rebirth(where, f"no DBIRTH from {where.device}")
            raise Problem("sparkplug_no_birth", f"no DBIRTH from device {where.device}")
        scope.reported = node.reported = True
        asset = self._asset(where)
        if not _IDENTIFIER.fullmatch(asset):
            raise Problem("bad_topic", f"asset {asset!r} is not an identifier")
        if self.ingest.assets and asset not in self.ingest.assets:
            raise Problem("unknown_asset", f"{asset!r} is not in ingest.assets")
        default_ts = _millis(message.timestamp) if message.HasField("timestamp") else received_at  # type: ignore[attr-defined]
        updates: dict[float, dict[str, float]] = {}
        for metric in message.metrics:  # type: ignore[attr-defined]
            name = metric.name or scope.aliases.get(metric.alias)
            if name is None:
                self._ask_rebirth(where, f"alias {metric.alias} never born")
                raise Problem("sparkplug_unknown_alias", f"alias {metric.alias} was never born")
            sensor = self.to_sensor.get(name)
            if sensor is None:
                continue
            ts = _millis(metric.timestamp) if metric.HasField("timestamp") else default_ts
            updates.setdefault(ts, {})[sensor] = _number(metric, sensor)
        latest = min(MAX_TS, received_at + self.ingest.max_future_s)
        for ts in updates:
            if ts > latest:
                raise Problem("future_ts", f"timestamp {ts:.3f} s is ahead of the gateway clock")
        known = node.values.setdefault(asset, {})
        rows = []
        for ts in sorted(updates):
            known.update(updates[ts])
            rows.append(Row(asset, ts, dict(known)))
        return rows

    def _reading(self, row: Row) -> Readings:
        asset, ts, known = row.asset, row.ts, row.values
        missing = [s for s in self.sensors if s not in known]
        if missing and not self.impute:
            raise Problem("missing_sensor", f"no value yet for sensor {missing[0]!r}")
        if len(missing) == len(self.sensors):
            raise Problem("missing_sensor", "none of the model's sensors")
        row = [known.get(s, self.means[s]) for s in self.sensors]
        return Readings(asset, [ts], [row], tuple(missing))

    def _asset(self, where: Topic) -> str:
        mode = self.config.asset
        if mode == "node" or where.device is None:
            return where.node
        return where.device if mode == "device" else f"{where.node}.{where.device}"

    def _ask_rebirth(self, where: Topic, why: str) -> None:
        key = (where.group, where.node)
        now = self.clock()
        self._tokens = min(_REBIRTHS_PER_S, self._tokens + (now - self._refilled) * _REBIRTHS_PER_S)
        self._refilled = now
        last = self._asked.get(key)
        if (last is not None and now - last < self.config.rebirth_interval_s) or self._tokens < 1:
            self.stats.rebirths_suppressed += 1
            return
        self._tokens -= 1
        self._asked[key] = now
        self._asked.move_to_end(key)
        while len(self._asked) > self.config.max_nodes:
            self._asked.popitem(last=False)
        self.stats.rebirth_requests += 1
        self._warn.warning(
            "rebirth", "sparkplug: asking %s/%s to rebirth (%s)", where.group, where.node, why
        )
        if len(self._requests) >= _REBIRTHS_PER_S:  # nobody took them: the oldest go
            del self._requests[0]
        self._requests.append(
            (f"{NAMESPACE}/{where.group}/NCMD/{where.node}", rebirth_payload(time.time()))
        )


def _evictable(entries: OrderedDict[K, V], proven: Callable[[V], bool], new: K) -> K:
    """What to forget when full, never the `new` entry just born: the entry silent longest
    among those never followed by data (births alone cost a publisher nothing, so a flood of
    made-up ids pushes out its own first), else the one silent longest."""
    unproven = (k for k, v in entries.items() if k != new and not proven(v))
    return next(unproven, next(k for k in entries if k != new))


def rebirth_payload(now: float) -> bytes:
    request = schema.Payload(timestamp=int(now * 1000))
    request.metrics.add(name=REBIRTH_METRIC, datatype=schema.BOOLEAN, boolean_value=True)
    return request.SerializeToString()


def _millis(stamp: int) -> float:
    return stamp / 1000.0


def _integer(metric: object) -> int | None:
    kind = metric.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(metric, kind) if kind in ("int_value", "long_value") else None


def _number(metric: object, sensor: str) -> float:
    """The metric's value as a finite float; signed integers come two's-complement encoded."""
    kind = metric.WhichOneof("value")  # type: ignore[attr-defined]
    if metric.is_null or kind is None:  # type: ignore[attr-defined]
        raise Problem("not_numeric", f"sensor {sensor!r}: null")
    if kind not in ("int_value", "long_value", "float_value", "double_value", "boolean_value"):
        raise Problem("not_numeric", f"sensor {sensor!r}: a {kind}")
    value = getattr(metric, kind)
    bits = schema.SIGNED_BITS.get(metric.datatype)  # type: ignore[attr-defined]
    if bits is not None and kind in ("int_value", "long_value"):
        value = _signed(value, bits, 32 if kind == "int_value" else 64)
    number = float(value)
    if not math.isfinite(number):
        raise Problem("not_finite", f"sensor {sensor!r}: {number}")
    return number


def _signed(value: int, bits: int, width: int) -> int:
    """A signed integer from its unsigned field: sign-extended to the field's `width` (as the
    specification stores Int8/16/32 in the 32-bit field) or masked to the type's own `bits`
    (as some encoders do; such a value is past the type's positive range, so it can only be
    negative)."""
    if value >= 1 << (width - 1):
        return value - (1 << width)
    if value >= 1 << (bits - 1):
        return value - (1 << bits)
    return value
