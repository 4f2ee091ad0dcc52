"""`json`: one object, or an array of them, per message; each object a whole reading of the
topic's asset. `sensors` maps each model sensor to a field path (dots walk into nested
objects: Tasmota's `ENERGY.Power`); `ts_field` is the time's path. A key that holds a dot
itself is found too: a path is first looked up whole."""

from __future__ import annotations

from collections.abc import Sequence

from agent.config import IngestConfig, SourceConfig
from agent.ingest import decode_json
from agent.sources import Decoded, Incoming, Row

ABSENT = object()


class JsonDecoder:
    def __init__(self, source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig) -> None:
        self.paths = [(name, source.sensors.get(name, name)) for name in sensors]
        self.ts_field = source.ts_field
        self.limit = ingest.max_payload_bytes
        self.max_depth = ingest.max_depth

    def decode(self, message: Incoming) -> Decoded:
        out = Decoded()
        if message.asset is None:  # not reached: the config binds or names the asset
            out.dead.append(("bad_topic", "no asset"))
            return out
        payload = message.payload
        if len(payload) > self.limit:
            out.dead.append(("oversized", f"{len(payload)} bytes > {self.limit}"))
            return out
        if not payload.strip():
            out.dead.append(("empty", "no payload"))
            return out
        doc, problem = decode_json(payload, self.max_depth)
        if problem:
            out.dead.append(problem)
            return out
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            out.dead.append(("empty", "empty array"))
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                where = f"item {n}: " if isinstance(doc, list) else ""
                out.dead.append(("not_object", f"{where}expected a JSON object"))
                continue
            values = {}
            for name, path in self.paths:
                value = lookup(item, path)
                if value is not ABSENT:
                    values[name] = value
            ts = lookup(item, self.ts_field)
            out.rows.append(Row(message.asset, None if ts is ABSENT else ts, values))
        return out


def lookup(doc: dict, path: str) -> object:
    """The value at a dotted path, or ABSENT."""
    if path in doc:
        return doc[path]
    node: object = doc
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return ABSENT
        node = node[key]
    return node


def make_decoder(source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig) -> JsonDecoder:
    return JsonDecoder(source, sensors, ingest)
