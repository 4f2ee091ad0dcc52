"""The configured sources, as the pipeline sees them: a message in, readings and dead letters
out (see the package docstring for the flow, agent.sources.join for the join)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.config import IngestConfig, SourceConfig
from agent.ingest import MAX_TS, DeadLetter, Parser, Readings
from agent.message import Message
from agent.sources import Decoded, Decoder, Incoming, Reply, Value
from agent.sources.join import Joiner, Taken
from agent.sources.registry import decoder_factory
from agent.sources.stamps import Stamper, short
from agent.sources.topics import Bound, TopicTemplate

MAX_REPLIES = 16  # replies a batch may ask for; more are dropped (counted)
_RECEIPT_STEP_S = 1e-6  # how far a receipt time is put after its asset's last reading


@dataclass
class _Entry:
    config: SourceConfig
    template: TopicTemplate
    decoder: Decoder
    stamper: Stamper


@dataclass
class Parsed:
    """One message's or one turn's result: readings with the message they come from (a
    message of its own for a joined reading, named after its last value's topic)."""

    readings: list[tuple[Readings, Message]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    kept: bool = False  # the message gave readings or a value now waiting to be joined


class Sources:
    def __init__(self, ingest: IngestConfig, sensors: list[str], means: list[float]) -> None:
        self.ingest = ingest
        self.sensors = sensors
        self.index = {name: j for j, name in enumerate(sensors)}
        self.entries = [
            _Entry(
                s,
                TopicTemplate(s.topic),
                decoder_factory(s.format)(s, sensors, ingest),
                Stamper(s.stamps),
            )
            for s in ingest.sources
        ]
        self.checker = Parser(sensors, "", ingest, means)
        self.joiner = Joiner(sensors, ingest.max_assets)
        self.assets = frozenset(ingest.assets)
        self.replies: list[Reply] = []
        self.replies_dropped = 0
        self._floor: dict[str, float] = {}  # this batch's last receipt time per asset
        self._latest: dict[str, float] = {}  # this batch's latest payload time per asset

    def filters(self) -> list[str]:
        return list(dict.fromkeys(e.template.filter for e in self.entries))

    def by_receipt(self, topic: str) -> bool:
        """Whether readings on `topic` may take their time from their receipt: then identical
        payloads are distinct readings, and only the broker's redelivery is a copy."""
        found = self._match(topic)
        return found is not None and found[0].stamper.may_receive

    def begin(self) -> None:
        """A new batch."""
        self._floor.clear()
        self._latest.clear()
        self.replies = []

    def parse(self, message: Message, last_ts: Callable[[str], float]) -> Parsed:
        out = Parsed()

        def reject(reason: str, detail: str) -> None:
            out.dead.append(
                DeadLetter(message.topic, reason, detail, message.received_at, message.payload)
            )

        found = self._match(message.topic)
        if found is None:
            reject("bad_topic", "matches no source's topic with an asset and sensor to bind")
            return out
        entry, bound = found
        asset = bound.asset or entry.config.asset
        # None: the decoder names the asset from the payload's own addressing (Sparkplug B's
        # node or device) and checks `ingest.assets` itself.
        if self.assets and asset is not None and asset not in self.assets:
            reject("unknown_asset", f"{asset!r} is not in ingest.assets")
            return out
        decoded = entry.decoder.decode(
            Incoming(message.topic, asset, bound.sensor, message.payload, message.received_at)
        )
        for reason, detail in decoded.dead:
            reject(reason, detail)
        self._take_replies(decoded)
        for n, row in enumerate(decoded.rows):
            stamp = self._stamp(entry, row.asset, row.ts, message.received_at + n * 1e-6, last_ts)
            result = self._check(row.asset, stamp, row.ts, row.values, message.received_at)
            if isinstance(result, Readings):
                out.readings.append((result, message))
            else:
                reject(*result)
        for value in decoded.values:
            self._join(entry, message, value, last_ts, out)
        out.kept = out.kept or any(m is message for _, m in out.readings)
        return out

    def due(self, now: float) -> Parsed:
        """Readings that have waited `join_wait_s` by `now`."""
        out = Parsed()
        self._taken(self.joiner.due(now), out)
        return out

    def _match(self, topic: str) -> tuple[_Entry, Bound] | None:
        for entry in self.entries:
            bound = entry.template.match(topic)
            if bound is not None:
                return entry, bound
        return None

    def _stamp(
        self,
        entry: _Entry,
        asset: str,
        raw: object,
        received_at: float,
        last_ts: Callable[[str], float],
    ) -> float | str:
        after = max(last_ts(asset), self._latest.get(asset, -math.inf))
        stamp = entry.stamper.stamp(raw, received_at, after)
        if isinstance(stamp, float) and stamp != received_at:
            if stamp <= received_at + self.ingest.max_future_s:  # else `future_ts`
                self._latest[asset] = max(stamp, after)
        elif isinstance(stamp, float):
            # On receipt: after the asset's last reading, even if the clock stepped back.
            floor = max(last_ts(asset), self._floor.get(asset, -math.inf)) + _RECEIPT_STEP_S
            stamp = min(max(stamp, floor), MAX_TS)
            self._floor[asset] = stamp
        return stamp

    def _check(
        self, asset: str, stamp: float | str, raw: object, values: dict, received_at: float
    ) -> Readings | tuple[str, str]:
        if isinstance(stamp, str):
            return "bad_ts", stamp
        if stamp > received_at + self.ingest.max_future_s:
            return "future_ts", (
                f"'ts' {short(raw)} is {stamp - received_at:.0f} s ahead of the gateway clock "
                f"(ingest.max_future_s = {self.ingest.max_future_s:g})"
            )
        return self.checker.careful(asset, stamp, values)

    def _join(
        self,
        entry: _Entry,
        message: Message,
        value: Value,
        last_ts: Callable[[str], float],
        out: Parsed,
    ) -> None:
        stamp = self._stamp(entry, value.asset, value.ts, message.received_at, last_ts)
        checked = self._check_value(value, stamp, message.received_at)
        if isinstance(checked, tuple):
            out.dead.append(
                DeadLetter(message.topic, *checked, message.received_at, message.payload)
            )
            return
        taken, problem = self.joiner.add(
            value.asset,
            value.sensor,
            stamp,
            checked,
            message.received_at,
            message.topic,
            (entry.config.join_window_s, entry.config.join_wait_s),
            last_ts,
        )
        if problem is not None:
            out.dead.append(
                DeadLetter(message.topic, *problem, message.received_at, message.payload)
            )
        else:
            out.kept = True
        self._taken(taken, out)

    def _check_value(
        self, value: Value, stamp: float | str, received_at: float
    ) -> float | tuple[str, str]:
        if value.sensor not in self.index:
            return "unknown_sensor", f"{value.sensor!r} is not a model sensor"
        if isinstance(stamp, str):
            return "bad_ts", stamp
        if stamp > received_at + self.ingest.max_future_s:
            return "future_ts", (
                f"'ts' {short(value.ts)} is {stamp - received_at:.0f} s ahead of the gateway "
                f"clock (ingest.max_future_s = {self.ingest.max_future_s:g})"
            )
        v = value.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "not_numeric", f"sensor {value.sensor!r}: {short(v)} is not a number"
        try:
            number = float(v)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            return "not_finite", f"sensor {value.sensor!r}: {short(v)}"
        return number

    def _taken(self, taken: list[Taken], out: Parsed) -> None:
        for t in taken:
            w = t.reading
            origin = Message(
                w.topic,
                json.dumps({"joined": w.values, "ts": w.t0}).encode(),
                w.opened_at,
                -1,
                False,
                -1,
            )
            result = self.checker.careful(t.asset, w.t0, w.values)
            if isinstance(result, Readings):
                out.readings.append((result, origin))
            else:
                reason, detail = result
                out.dead.append(
                    DeadLetter(
                        origin.topic,
                        reason,
                        f"joined: {detail}",
                        origin.received_at,
                        origin.payload,
                    )
                )

    def _take_replies(self, decoded: Decoded) -> None:
        room = MAX_REPLIES - len(self.replies)
        self.replies += decoded.replies[:room]
        self.replies_dropped += max(0, len(decoded.replies) - max(room, 0))
