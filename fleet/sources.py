"""Readings as a configured source's publishers send them, so that `edge-fleet replay` can feed
every format an agent reads (`--source-config FILE.toml --source NAME`): the inverse of the
agent's decoders, written from the same `[[ingest.sources]]` entry.

- `json`: one object per reading on the source's topic, each sensor at its field path
  (`ENERGY.Power` nests), the time at `ts_field` unless the source stamps on receipt, written
  as the source's devices write it: local time without an offset when the source has a
  `timestamps.zone`, integer milliseconds when its `unit` is `ms`;
- `value`: one message per sensor on the topic with `{sensor}` filled in: the bare number
  when the source stamps on receipt, else `{"value": ..., "<ts_field>": ...}`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from agent.config import ConfigError, SourceConfig, format_errors, read_toml

Outgoing = list[tuple[str, bytes]]


def load_source(path: Path, name: str) -> SourceConfig:
    """The `[[ingest.sources]]` entry named `name` in a TOML file (an agent's config)."""
    raw = read_toml(path)
    entries = raw.get("ingest", {}).get("sources", [])
    named = [e for e in entries if isinstance(e, dict) and e.get("name") == name]
    if not named:
        known = ", ".join(str(e.get("name")) for e in entries if isinstance(e, dict)) or "none"
        raise ConfigError(f"{path}: no [[ingest.sources]] named {name!r} (there: {known})")
    try:
        return SourceConfig.model_validate(named[0])
    except ValidationError as exc:
        raise ConfigError(format_errors(f"{path} source {name!r}", exc)) from None


def encode(source: SourceConfig, asset: str, readings: list[dict[str, object]]) -> Outgoing:
    """The messages that carry `readings` of `asset` through `source`."""
    if "+" in source.topic.split("/") or "#" in source.topic.split("/"):
        raise ConfigError(f"source {source.name!r}: cannot publish to a topic with + or #")
    if source.asset is not None and source.asset != asset:
        raise ConfigError(f"source {source.name!r} carries asset {source.asset!r} only")
    topic = source.topic.replace("{asset}", asset)
    if source.format == "json":
        return [(topic, _json(source, r)) for r in readings]
    if source.format == "value":
        return [
            (topic.replace("{sensor}", source.sensors.get(name, name)), _value(source, r, v))
            for r in readings
            for name, v in r.items()
            if name != "ts"
        ]
    raise ConfigError(f"source {source.name!r}: replay cannot write format {source.format!r}")


def _json(source: SourceConfig, reading: dict[str, object]) -> bytes:
    doc: dict[str, object] = {}
    for name, value in reading.items():
        if name == "ts":
            if source.stamps.policy != "received":
                _put(doc, source.ts_field, _device_time(source, value))
        else:
            _put(doc, source.sensors.get(name, name), value)
    return json.dumps(doc).encode()


def _value(source: SourceConfig, reading: dict[str, object], value: object) -> bytes:
    """A bare number, or with the reading's time when the source reads times from payloads."""
    if source.stamps.policy == "received":
        return repr(float(value)).encode()  # type: ignore[arg-type]
    doc = {"value": value}
    _put(doc, source.ts_field, _device_time(source, reading["ts"]))
    return json.dumps(doc).encode()


def _device_time(source: SourceConfig, ts: object) -> object:
    """A reading's time (unix seconds, or ISO 8601 with an offset) as the source's devices
    send it."""
    stamps = source.stamps
    if stamps.zone is None and stamps.unit != "ms":
        return ts
    moment = (
        datetime.fromisoformat(ts)
        if isinstance(ts, str)
        else datetime.fromtimestamp(float(ts), UTC)  # type: ignore[arg-type]
    )
    if stamps.zone is not None:
        return moment.astimezone(ZoneInfo(stamps.zone)).replace(tzinfo=None).isoformat(sep=" ")
    return round(moment.timestamp() * 1000)


def _put(doc: dict[str, object], path: str, value: object) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})  # type: ignore[assignment]
    node[leaf] = value


def sparkplug_route(source: SourceConfig, asset: str) -> tuple[str, dict[str, str]]:
    """Where a `sparkplug_b` source's edge node would publish `asset`'s readings
    (GROUP/NODE/DEVICE), and the metric name of each column (its `sensors`). The group is the
    topic's (`spBv1.0/<group>/#`); the node or device that is not the asset is `edge-fleet`."""
    levels = source.topic.split("/")
    group = levels[1] if len(levels) > 2 else "+"
    if group in ("+", "#"):
        raise ConfigError(
            f"source {source.name!r}: replay needs one group in the topic (spBv1.0/<group>/#)"
        )
    mode = source.sparkplug.asset if source.sparkplug is not None else "device"
    if mode == "device":
        where = f"{group}/edge-fleet/{asset}"
    elif mode == "node":
        where = f"{group}/{asset}/edge-fleet"
    else:
        node, dot, device = asset.partition(".")
        if not dot:
            raise ConfigError(f"source {source.name!r} names assets <node>.<device>: {asset!r}")
        where = f"{group}/{node}/{device}"
    return where, {sensor: metric for sensor, metric in source.sensors.items()}
