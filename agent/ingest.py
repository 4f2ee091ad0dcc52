"""Ingest stage: MQTT payloads → validated readings, or dead letters with a reason.

A payload is one JSON object `{"ts": ..., "<sensor>": <number>, ...}` or an array of them; each
object stands or falls alone, so one bad reading in an array does not cost its neighbours.
Keys that are not model sensors are ignored; every model sensor must be a finite number, or,
when the config says `impute`, a missing one takes its training mean from the manifest.
Nothing a publisher sends can raise out of `Parser.parse`: size is checked before decoding and
nesting depth before anything walks the document.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from agent.config import IDENTIFIER_PATTERN, IDENTIFIER_RULE, IngestConfig
from agent.sources.stamps import MAX_TS, Stamper, _finite, parse_ts

EXCERPT_BYTES = 512
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_TS_TYPES = (float, int)  # not bool
# MAX_TS: a `ts` past it would raise when an alert is formatted, and would push the asset's
# clock so far ahead that every later reading were out of order; milliseconds sent as seconds
# land there too (unless `ingest.timestamps.unit` says milliseconds).
__all__ = ["MAX_TS", "REASONS", "DeadLetter", "Parser", "Readings", "parse_ts"]
# Every reason a message or reading is dead-lettered for (the last three come from the pipeline,
# which knows the assets' state).
REASONS = (
    "bad_topic",
    "oversized",
    "empty",
    "binary",
    "invalid_json",
    "too_deep",
    "not_object",
    "unknown_asset",
    "bad_ts",
    "future_ts",
    "missing_sensor",
    "not_numeric",
    "not_finite",
    "duplicate_ts",
    "out_of_order",
    "too_many_assets",
    "unknown_sensor",
    # Sparkplug B (agent.sparkplug.decoder): a payload that is not one, data from a node or
    # device with no birth, an alias no birth declared, a birth over sparkplug.max_metrics.
    "sparkplug_bad_payload",
    "sparkplug_no_birth",
    "sparkplug_unknown_alias",
    "sparkplug_oversized_birth",
)


@dataclass(frozen=True)
class Readings:
    """Readings of one asset from one message, as plain columns: the runtime turns a whole
    batch's into arrays at once, so a message of a hundred readings costs little more than one."""

    asset: str
    ts: list[float]  # unix seconds, finite, >= 0
    values: list[list[float]]  # finite, in the model's sensor order
    imputed: tuple[str, ...] = ()  # sensors filled with their training mean (one-reading blocks)


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    reason: str
    detail: str
    received_at: float
    payload: bytes

    @property
    def excerpt(self) -> str:
        return self.payload[:EXCERPT_BYTES].decode("utf-8", errors="replace")


class Parser:
    def __init__(
        self,
        sensors: list[str],
        readings_prefix: str,
        config: IngestConfig,
        training_means: list[float],
    ) -> None:
        self.sensors = sensors
        self.prefix = readings_prefix  # e.g. "edge/gw-1/readings/"
        self.config = config
        self.assets = frozenset(config.assets)
        self.means = training_means if config.missing_sensor == "impute" else None
        self.stamper = Stamper(config.timestamps)
        # The block path reads numeric unix seconds only; other time settings go item by item.
        self.plain_ts = config.timestamps.policy == "payload" and config.timestamps.unit == "s"
        self._latest: dict[str, float] = {}  # this batch's latest time per asset (`begin`)

    def begin(self) -> None:
        """A new batch."""
        self._latest.clear()

    def parse(
        self,
        topic: str,
        payload: bytes,
        received_at: float,
        last_ts: Callable[[str], float] | None = None,
    ) -> tuple[list[Readings], list[DeadLetter]]:
        """`last_ts(asset)`: the asset's last reading's time, which tells the two passes of a
        naive time in the hour a fall-back repeats (agent.sources.stamps)."""

        def reject(reason: str, detail: str) -> DeadLetter:
            return DeadLetter(topic, reason, detail, received_at, payload)

        asset = topic[len(self.prefix) :] if topic.startswith(self.prefix) else ""
        if not _IDENTIFIER.fullmatch(asset):
            return [], [reject("bad_topic", f"expected {self.prefix}<asset>, {IDENTIFIER_RULE}")]
        if self.assets and asset not in self.assets:
            return [], [reject("unknown_asset", f"{asset!r} is not in ingest.assets")]
        limit = self.config.max_payload_bytes
        if len(payload) > limit:
            return [], [reject("oversized", f"{len(payload)} bytes > {limit}")]
        if not payload.strip():
            return [], [reject("empty", "no payload")]
        doc, problem = self._decode(payload)
        if problem:
            return [], [reject(*problem)]
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            return [], [reject("empty", "empty array")]
        # The latest time a reading may have: an accepted one sets its asset's clock (#13).
        latest = min(MAX_TS, received_at + self.config.max_future_s)
        block = self._block(asset, items, latest) if self.plain_ts else None
        if block is not None:
            return [block], []
        readings, dead = [], []
        before = last_ts(asset) if last_ts is not None else -math.inf
        for n, item in enumerate(items):
            after = max(before, self._latest.get(asset, -math.inf))
            # Readings stamped on receipt in one array keep their order (a microsecond apart).
            result = self._reading(asset, item, received_at + n * 1e-6, after)
            if isinstance(result, Readings):
                readings.append(result)
                self._latest[asset] = max(after, result.ts[0])
            else:
                reason, detail = result
                where = f"item {n}: " if isinstance(doc, list) else ""
                dead.append(reject(reason, where + detail))
        return readings, dead

    def _decode(self, payload: bytes) -> tuple[object, tuple[str, str] | None]:
        return decode_json(payload, self.config.max_depth)

    def _block(self, asset: str, items: list, latest: float) -> Readings | None:
        """Every item a clean reading (numeric `ts` up to `latest`, every sensor a finite
        float): all of them as one block. Anything else returns None, and the item-by-item path
        names the problem."""
        try:
            stamps = [item["ts"] for item in items]
            rows = [[item[name] for name in self.sensors] for item in items]
        except (KeyError, TypeError):  # an item without a key, or not an object
            return None
        flat = [v for row in rows for v in row]
        if not all(type(v) is float for v in flat) or not all(map(math.isfinite, flat)):
            return None
        if not all(type(t) in _TS_TYPES and 0 <= t <= latest for t in stamps):
            return None
        return Readings(asset, stamps, rows)

    def _reading(
        self, asset: str, item: object, received_at: float, after: float
    ) -> Readings | tuple[str, str]:
        if not isinstance(item, dict):
            return "not_object", f"expected a JSON object, got {type(item).__name__}"
        ts = self.stamper.stamp(item.get("ts"), received_at, after)
        if isinstance(ts, str):
            return "bad_ts", ts
        if ts > received_at + self.config.max_future_s:
            return "future_ts", (
                f"'ts' {_short(item.get('ts'))} is {ts - received_at:.0f} s ahead of the "
                f"gateway clock (ingest.max_future_s = {self.config.max_future_s:g})"
            )
        # The common case in one pass; anything unusual (missing, int, text) goes the careful way.
        row = [item.get(name) for name in self.sensors]
        if all(type(v) is float for v in row) and all(map(math.isfinite, row)):
            return Readings(asset, [ts], [row])
        return self.careful(asset, ts, item)

    def careful(self, asset: str, ts: float, item: dict) -> Readings | tuple[str, str]:
        """Sensor by sensor: name the first problem, or impute what is missing."""
        values = np.empty(len(self.sensors), dtype=np.float64)
        imputed: list[str] = []
        for j, name in enumerate(self.sensors):
            if name not in item:
                if self.means is None:
                    return "missing_sensor", f"no value for sensor {name!r}"
                imputed.append(name)
                values[j] = self.means[j]
                continue
            value = item[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "not_numeric", f"sensor {name!r}: {_short(value)} is not a number"
            number = _finite(value)
            if number is None:
                return "not_finite", f"sensor {name!r}: {_short(value)}"
            values[j] = number
        if len(imputed) == len(self.sensors):
            return "missing_sensor", "none of the model's sensors"
        return Readings(asset, [ts], [values.tolist()], tuple(imputed))


def decode_json(payload: bytes, max_depth: int) -> tuple[object, tuple[str, str] | None]:
    """The JSON document, or (reason, detail) of why the payload is not one."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        # orjson is strict (no NaN, no ints past 64 bits, a fixed depth limit): let the
        # standard parser decide what the payload is, and name the problem if it has one.
        doc, problem = _decode_leniently(payload, max_depth)
        if problem:
            return None, problem
    # Cheap bound first. Every container is a `[` or `{` byte (brackets inside strings only
    # add to the count), so a document with no more of them than `max_depth`, or no more
    # than its own top level (the array and each object or array in it, once), is shallow.
    openers = payload.count(b"[") + payload.count(b"{")
    flat = openers <= max_depth or openers <= 1 + _containers(doc)
    if not flat and _depth(doc, max_depth) > max_depth:
        return None, ("too_deep", f"nested deeper than {max_depth}")
    return doc, None


def _decode_leniently(payload: bytes, max_depth: int) -> tuple[object, tuple[str, str] | None]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, ("binary", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    try:
        return json.loads(text), None
    except RecursionError:
        return None, ("too_deep", f"nested deeper than {max_depth}")
    except ValueError as exc:
        return None, ("invalid_json", str(exc)[:200])


def _containers(doc: object) -> int:
    """Objects and arrays at the top level of an array (one, a lone object, when not an array)."""
    if not isinstance(doc, list):
        return 1
    return sum(type(item) is dict or type(item) is list for item in doc)


def _depth(doc: object, limit: int) -> int:
    """Nesting depth of a parsed document, counted no further than `limit` + 1."""
    if not isinstance(doc, list | dict) or limit < 0:
        return 0
    children = doc.values() if isinstance(doc, dict) else doc
    return 1 + max((_depth(c, limit - 1) for c in children), default=0)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
