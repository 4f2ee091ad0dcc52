"""Joining readings that come one sensor per message into one reading per asset.

A value opens a waiting reading of its asset at its time, or joins the newest waiting reading
that started at most `join_window_s` before it and lacks its sensor. A reading is taken:

- when it is complete (every model sensor has a value); older readings of the asset still
  waiting are taken with it, before it (their missing sensors are late, and a later value
  could only be out of order);
- when it has waited `join_wait_s` of received time: the clock is the received time of the
  newest message (so that a backlog delivered after a restart completes what it can first),
  or the gateway's clock when no message comes;
- when its asset has `MAX_WAITING` readings waiting, the oldest.

A reading taken incomplete has its missing sensors handled by `ingest.missing_sensor`. A value
not after its asset's last reading is `out_of_order`, a second value of a sensor at the same
time `duplicate_ts`; neither is kept. Waiting readings are state: they are committed with each
batch (`snapshot`) and restored at start, so a message acknowledged has its value kept.
Bounded: each asset waits with at most MAX_WAITING readings of at most one value per model
sensor. A new asset (none of its readings taken yet) may open a place while fewer than
`max_assets` assets wait; an asset the agent already scores always may, so that a flood of new
names cannot blind it: at most 2 x `max_assets` assets wait (the scored ones are at most
`max_assets` too).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_WAITING = 4  # readings waiting per asset


@dataclass
class Waiting:
    t0: float  # the time of its first value: the reading's time
    opened_at: float  # received time of its first value
    window_s: float
    wait_s: float
    topic: str  # the last topic that gave it a value (named by its dead letters)
    values: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "t0": self.t0,
            "opened_at": self.opened_at,
            "window_s": self.window_s,
            "wait_s": self.wait_s,
            "topic": self.topic,
            "values": self.values,
        }


@dataclass(frozen=True)
class Taken:
    asset: str
    reading: Waiting


class Joiner:
    def __init__(self, sensors: list[str], max_assets: int) -> None:
        self.sensors = frozenset(sensors)
        self.max_assets = max_assets
        self.waiting: dict[str, list[Waiting]] = {}  # by asset, oldest first
        self.changed: set[str] = set()  # assets whose waiting readings changed since `snapshots`

    def add(
        self,
        asset: str,
        sensor: str,
        ts: float,
        value: float,
        received_at: float,
        topic: str,
        limits: tuple[float, float],
        last_ts: Callable[[str], float],
    ) -> tuple[list[Taken], tuple[str, str] | None]:
        """Add a value (`limits`: its source's join window and wait). Returns the readings
        taken now, and the (reason, detail) if the value was not kept."""
        if ts <= last_ts(asset):
            return [], ("out_of_order", f"ts {ts} is not after the asset's last reading")
        queue = self.waiting.get(asset)
        if queue is None:
            if len(self.waiting) >= self.max_assets and last_ts(asset) == -math.inf:
                return [], (
                    "too_many_assets",
                    f"{self.max_assets} assets have readings waiting for sensors",
                )
            queue = self.waiting[asset] = []
        self.changed.add(asset)
        target = self._target(queue, sensor, ts)
        if isinstance(target, str):
            if not queue:
                del self.waiting[asset]
            return [], ("duplicate_ts", target)
        if target is None:
            window_s, wait_s = limits
            target = Waiting(ts, received_at, window_s, wait_s, topic)
            queue.insert(bisect.bisect([w.t0 for w in queue], ts), target)
        target.values[sensor] = value
        target.topic = topic
        taken: list[Taken] = []
        if self.sensors <= target.values.keys():
            upto = queue.index(target) + 1
            taken = [Taken(asset, w) for w in queue[:upto]]
            del queue[:upto]
        elif len(queue) > MAX_WAITING:
            taken = [Taken(asset, queue.pop(0))]
        if not queue:
            del self.waiting[asset]
        return taken, None

    @staticmethod
    def _target(queue: list[Waiting], sensor: str, ts: float) -> Waiting | str | None:
        """The waiting reading `ts` belongs to (None: a new one), or why it is a duplicate."""
        for w in reversed(queue):
            if w.t0 <= ts <= w.t0 + w.window_s:
                if sensor not in w.values:
                    return w
                if ts == w.t0:
                    return f"sensor {sensor!r} already has a value at ts {ts}"
                return None
        return None

    def due(self, now: float) -> list[Taken]:
        """The readings that have waited long enough by `now`, with the older ones of their
        asset."""
        taken: list[Taken] = []
        for asset in list(self.waiting):
            queue = self.waiting[asset]
            late = [i for i, w in enumerate(queue) if w.opened_at + w.wait_s <= now]
            if late:
                upto = late[-1] + 1
                taken += [Taken(asset, w) for w in queue[:upto]]
                del queue[:upto]
                self.changed.add(asset)
                if not queue:
                    del self.waiting[asset]
        return taken

    def next_due(self) -> float | None:
        """When the next waiting reading is due (None: none waits)."""
        return min((w.opened_at + w.wait_s for q in self.waiting.values() for w in q), default=None)

    def snapshots(self) -> list[tuple[str, str | None]]:
        """(asset, state) of each asset changed since the last call (None: nothing waits),
        to commit with the batch."""
        out = [(a, _dump(self.waiting.get(a))) for a in sorted(self.changed)]
        self.changed.clear()
        return out

    def restore(self, rows: list[tuple[str, str]]) -> None:
        """As committed: everything else is dropped."""
        self.waiting.clear()
        self.changed.clear()
        for asset, state in rows[: 2 * self.max_assets]:
            queue = [Waiting(**w) for w in json.loads(state)][-MAX_WAITING:]
            if queue:
                self.waiting[asset] = queue

    def forget(self, assets: list[str]) -> None:
        for asset in assets:
            self.waiting.pop(asset, None)
            self.changed.discard(asset)


def _dump(queue: list[Waiting] | None) -> str | None:
    return json.dumps([w.as_dict() for w in queue]) if queue else None
