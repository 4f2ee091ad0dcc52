"""A Sparkplug B edge node, as far as publishing goes: births, data and deaths with their
sequence numbers and aliases. The tests, the bench and replays speak Sparkplug through it."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.sparkplug import schema
from agent.sparkplug.decoder import NAMESPACE


@dataclass
class EdgeNode:
    group: str
    node: str
    metrics: list[str]  # names; metric i has alias i + 1
    bd_seq: int = 0
    seq: int = field(default=-1)

    def _payload(self, ts_ms: int, with_seq: bool = True) -> schema.Payload:
        payload = schema.Payload(timestamp=ts_ms)
        if with_seq:
            self.seq = (self.seq + 1) % 256
            payload.seq = self.seq
        return payload

    def topic(self, kind: str, device: str | None = None) -> str:
        tail = f"/{device}" if device else ""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}{tail}"

    def node_birth(self, ts_ms: int) -> tuple[str, bytes]:
        self.seq = -1
        payload = self._payload(ts_ms)
        payload.metrics.add(name="bdSeq", datatype=schema.INT64, long_value=self.bd_seq)
        return self.topic("NBIRTH"), payload.SerializeToString()

    def device_birth(self, device: str, ts_ms: int, values: list[float]) -> tuple[str, bytes]:
        payload = self._payload(ts_ms)
        for alias, (name, value) in enumerate(zip(self.metrics, values, strict=True), 1):
            payload.metrics.add(name=name, alias=alias, datatype=schema.DOUBLE, double_value=value)
        return self.topic("DBIRTH", device), payload.SerializeToString()

    def device_data(
        self, device: str, ts_ms: int, values: dict[str, float], by_alias: bool = True
    ) -> tuple[str, bytes]:
        """Report by exception: only `values` (metric name -> value), by alias unless not."""
        payload = self._payload(ts_ms)
        for name, value in values.items():
            metric = payload.metrics.add(datatype=schema.DOUBLE, double_value=value)
            if by_alias:
                metric.alias = self.metrics.index(name) + 1
            else:
                metric.name = name
        return self.topic("DDATA", device), payload.SerializeToString()

    def node_death(self) -> tuple[str, bytes]:
        payload = schema.Payload()
        payload.metrics.add(name="bdSeq", datatype=schema.INT64, long_value=self.bd_seq)
        return self.topic("NDEATH"), payload.SerializeToString()


def is_rebirth_request(payload: bytes) -> bool:
    """An NCMD asking the node to publish its births again (garbage is not)."""
    from google.protobuf.message import DecodeError

    from agent.sparkplug.decoder import REBIRTH_METRIC

    try:
        request = schema.Payload.FromString(payload)
    except DecodeError:
        return False
    return any(m.name == REBIRTH_METRIC and m.boolean_value for m in request.metrics)
