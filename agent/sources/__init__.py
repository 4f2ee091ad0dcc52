"""Sources: readings as publishers send them, mapped to the model's sensors.

    local broker ─▶ Source (subscribes to each `[[ingest.sources]]` topic filter)
        ─▶ Sources.decode(message) ─▶ the source whose topic template matches (first wins)
            ─▶ its format's Decoder ─▶ Decoded: rows, values, dead letters, replies
        ─▶ rows: checked and stamped (agent.sources.stamps) ─▶ readings
        ─▶ values (one sensor per message): joined per asset (agent.sources.join) ─▶ readings

The default source, `<prefix>/<device>/readings/<asset>` with our own JSON, keeps its own fast
parser (agent.ingest); a configured source is decoded here.

A format is a module named in `registry.FORMATS` with a function
`make_decoder(source: SourceConfig, sensors: Sequence[str], ingest: IngestConfig) -> Decoder`
(`sensors`: the model's, in order). Its `Decoder` has one method,
`decode(message: Incoming) -> Decoded`, which must never raise for anything a publisher sends
(a `Decoded` with a dead letter instead). A decoder:

- gives model sensor names (its source's `sensors` maps them: key = model sensor, value = what
  the source calls it; empty mapping = the model's names), and raw values: the framework checks
  that each is a finite number (`not_numeric`, `not_finite`), so decoders need not;
- gives each row or value its raw time from the payload (`None` when it has none): the
  framework applies the source's `timestamps` policy, zone and unit; a decoder that already
  has unix seconds (Sparkplug's milliseconds, converted) gives `Seconds(...)`;
- names the asset (from the topic's `{asset}` binding, `Incoming.asset`, or its own payload);
- keeps only bounded state (a decoder's state is not committed with the batch: after a crash
  it starts empty, so it must be able to ask for what it lost, as Sparkplug asks for a rebirth);
- may ask the agent to publish on the local broker (`Decoded.replies`: an NCMD
  `Node Control/Rebirth`), at most a few per message: the agent publishes them at QoS 0 after
  the batch commits, and drops (counting) what is over its bound.

Dead-letter reasons a decoder may give are its own (`unknown_alias`, …) or the shared ones in
agent.ingest.REASONS; each new reason must be added to `REASONS` there and documented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Seconds(float):
    """A time already in unix seconds: the source's `timestamps` unit and zone do not apply."""


@dataclass(frozen=True)
class Incoming:
    """One message for a source: its topic, the topic's bindings (None where the template has
    none; the source's fixed `asset` fills `asset`), payload, and when the agent received it."""

    topic: str
    asset: str | None
    sensor: str | None
    payload: bytes
    received_at: float


@dataclass(frozen=True)
class Row:
    """A whole reading: one asset's sensors at one time (model sensor -> raw value). Sensors it
    lacks are handled by `ingest.missing_sensor`."""

    asset: str
    ts: object
    values: dict[str, object]


@dataclass(frozen=True)
class Value:
    """One sensor's value of an asset at a time: joined with the asset's other sensors."""

    asset: str
    sensor: str
    ts: object
    value: object


@dataclass(frozen=True)
class Reply:
    """A message the decoder asks the agent to publish on the local broker."""

    topic: str
    payload: bytes


@dataclass
class Decoded:
    """What one message gave: readings (whole, or one sensor each), dead letters as
    (reason, detail) (one message may give several, one per bad item), replies."""

    rows: list[Row] = field(default_factory=list)
    values: list[Value] = field(default_factory=list)
    dead: list[tuple[str, str]] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)


class Decoder(Protocol):
    def decode(self, message: Incoming) -> Decoded:
        """Everything `message` holds; never raises for what a publisher sends."""
        ...
