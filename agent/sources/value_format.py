"""`value`: one bare number per message (`23.4`), the sensor named by the topic's `{sensor}`
(`plant/pump1/temperature`). `sensors` maps model sensors to the topic's names; a name that
maps to no model sensor is `unknown_sensor`. No time in the payload: by default the reading is
stamped when the agent received it. The values of an asset are joined into readings
(agent.sources.join)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from agent.config import IngestConfig, SourceConfig
from agent.sources import Decoded, Incoming, Value

_MAX_BYTES = 64  # the longest number anyone sends, with room for spaces


class ValueDecoder:
    def __init__(self, source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig) -> None:
        self.sensor_of = {source.sensors.get(name, name): name for name in sensors}

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
        if len(text) > _MAX_BYTES:
            out.dead.append(("oversized", f"{len(text)} bytes > {_MAX_BYTES} for one number"))
            return out
        try:
            value: object = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = _lenient(text)
        out.values.append(Value(message.asset, sensor, None, value))
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
