"""Ingest stage: MQTT payloads → validated readings, or dead letters with a reason.

A payload is one JSON object `{"ts": ..., "<sensor>": <number>, ...}` or an array of them; each
object stands or falls alone, so one bad reading in an array does not cost its neighbours.
Keys that are not model sensors are ignored; every model sensor must be a finite number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

EXCERPT_BYTES = 512


@dataclass(frozen=True)
class Reading:
    asset: str
    ts: float  # unix seconds
    values: np.ndarray  # float64, in the model's sensor order


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
    def __init__(self, sensors: list[str], readings_prefix: str, max_payload_bytes: int) -> None:
        self.sensors = sensors
        self.prefix = readings_prefix  # e.g. "edge/gw-1/readings/"
        self.max_payload_bytes = max_payload_bytes

    def parse(
        self, topic: str, payload: bytes, received_at: float
    ) -> tuple[list[Reading], list[DeadLetter]]:
        def reject(reason: str, detail: str) -> DeadLetter:
            return DeadLetter(topic, reason, detail, received_at, payload)

        asset = topic[len(self.prefix) :] if topic.startswith(self.prefix) else ""
        if not asset or "/" in asset:
            return [], [reject("bad_topic", f"expected {self.prefix}<asset>")]
        if len(payload) > self.max_payload_bytes:
            return [], [reject("oversized", f"{len(payload)} bytes > {self.max_payload_bytes}")]
        if not payload.strip():
            return [], [reject("empty", "no payload")]
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            return [], [reject("invalid_json", str(exc)[:200])]
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            return [], [reject("empty", "empty array")]
        readings, dead = [], []
        for n, item in enumerate(items):
            result = self._reading(asset, item)
            if isinstance(result, Reading):
                readings.append(result)
            else:
                reason, detail = result
                where = f"item {n}: " if isinstance(doc, list) else ""
                dead.append(reject(reason, where + detail))
        return readings, dead

    def _reading(self, asset: str, item: object) -> Reading | tuple[str, str]:
        if not isinstance(item, dict):
            return "not_object", f"expected a JSON object, got {type(item).__name__}"
        ts = parse_ts(item.get("ts"))
        if isinstance(ts, str):
            return "bad_ts", ts
        values = np.empty(len(self.sensors), dtype=np.float64)
        for j, name in enumerate(self.sensors):
            if name not in item:
                return "missing_sensor", f"no value for sensor {name!r}"
            value = item[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "not_numeric", f"sensor {name!r}: {value!r} is not a number"
            if not math.isfinite(value):
                return "not_finite", f"sensor {name!r}: {value!r}"
            values[j] = value
        return Reading(asset=asset, ts=ts, values=values)


def parse_ts(value: object) -> float | str:
    """Unix seconds from a number or an ISO 8601 string; a string result is the error."""
    if value is None:
        return "missing 'ts'"
    if isinstance(value, bool):
        return f"'ts' must be unix seconds or ISO 8601, got {value!r}"
    if isinstance(value, int | float):
        return (
            float(value) if math.isfinite(value) and value >= 0 else f"'ts' {value!r} out of range"
        )
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return f"'ts' {value[:40]!r} is not ISO 8601"
        if parsed.tzinfo is None:
            return f"'ts' {value!r} has no time zone (add Z or an offset)"
        return parsed.timestamp()
    return f"'ts' must be unix seconds or ISO 8601, got {type(value).__name__}"
