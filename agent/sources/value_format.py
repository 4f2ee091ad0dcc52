"""`value`: one number per message, the sensor named by the topic's `{sensor}`
(`plant/pump1/temperature`): bare (`23.4`), or a JSON object with the number at `value` and
the time at `ts_field` (`{"value": 23.4, "ts": 1700000000}`). `sensors` maps model sensors to
the topic's names; a name that maps to no model sensor is `unknown_sensor`. A bare number has
no time: by default a reading is stamped when the agent received it (`timestamps.policy =
"payload_else_received"` takes an object's time). The values of an asset are joined into
readings (agent.sources.join)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from agent.config import IngestConfig, SourceConfig
from agent.ingest import decode_json
from agent.sources import Decoded, Incoming, Value
from agent.sources.json_format import ABSENT, lookup

_MAX_BYTES = 64  # the longest number anyone sends, with room for spaces


class ValueDecoder:
    def __init__(self, source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig) -> None:
        self.sensor_of = {source.sensors.get(name, name): name for name in sensors}
        self.ts_field = source.ts_field
        self.limit = ingest.max_payload_bytes
        self.max_depth = ingest.max_depth

    def decode(self, message: Incoming) -> Decoded:
        out = Decoded()
        sensor = self.sensor_of.get(message.sensor or "")
        if message.asset is None or sensor is None:
            known = ", ".join(sorted(self.sensor_of))
            out.dead.append(("unknown_sensor", f"{message.sensor!r} is not one of: {known}"))
            return out
        text = message.payload.strip()
        if not text:
            out.dead.append(("empty", "no payload"))
            return out
        if text.startswith(b"{"):
            return self._object(message, sensor, text, out)
        if len(text) > _MAX_BYTES:
            out.dead.append(("oversized", f"{len(text)} bytes > {_MAX_BYTES} for one number"))
            return out
        try:
            value: object = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = _lenient(text)
        out.values.append(Value(message.asset, sensor, None, value))
        return out

    def _object(self, message: Incoming, sensor: str, text: bytes, out: Decoded) -> Decoded:
        if len(text) > self.limit:
            out.dead.append(("oversized", f"{len(text)} bytes > {self.limit}"))
            return out
        doc, problem = decode_json(text, self.max_depth)
        if problem:
            out.dead.append(problem)
            return out
        if not isinstance(doc, dict) or message.asset is None:  # `{` starts only an object
            out.dead.append(("not_object", "expected a number or a JSON object"))
            return out
        value, ts = lookup(doc, "value"), lookup(doc, self.ts_field)
        if value is ABSENT:
            out.dead.append(("missing_sensor", f"no 'value' for sensor {sensor!r}"))
            return out
        out.values.append(Value(message.asset, sensor, None if ts is ABSENT else ts, value))
        return out


def _lenient(text: bytes) -> object:
    """`nan`, `inf`, `1e999`: numbers orjson refuses, as floats (the framework rejects them
    as `not_finite`); anything else as the text it is (`not_numeric`)."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return repr(text[:20])
    try:
        return float(decoded)
    except ValueError:
        return decoded


def make_decoder(
    source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig
) -> ValueDecoder:
    return ValueDecoder(source, sensors, ingest)
