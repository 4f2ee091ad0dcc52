"""Alert stage: scores → alert episodes with debounce, levels and a message people can act on.

An episode fires after `fire_after` consecutive windows at or above the `info` level, fires
again if its level rises, and resolves after `resolve_after` consecutive windows below `info`.
Alert ids are uuid5 of (device, asset, model, episode start, state, level): the same input
yields the same ids, so consumers can drop duplicates. An asset's episode state is a small JSON
document (`snapshot`/`restore`) that the store commits with the readings that produced it, so a
restarted agent continues the episode instead of opening a new one with new ids.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from agent.model.manifest import LEVELS, Thresholds

_ID_NAMESPACE = uuid.UUID("6f9d6a36-2f0e-4c53-9a43-3f1de4a0b8a1")


@dataclass
class _Episode:
    above: int = 0
    below: int = 0
    firing: bool = False
    start_ts: float = 0.0
    level: str | None = None
    peak: float = 0.0
    peak_contributions: np.ndarray | None = None


@dataclass(frozen=True)
class Alert:
    id: str
    asset: str
    state: str
    level: str
    payload: dict[str, object]


@dataclass
class AlertTracker:
    device_id: str
    model: dict[str, str]
    sensors: list[str]
    thresholds: Thresholds
    fire_after: int
    resolve_after: int
    top_sensors: int
    _episodes: dict[str, _Episode] = field(default_factory=dict)

    def snapshot(self, asset: str) -> str:
        ep = self._episodes.get(asset, _Episode())
        doc = {**ep.__dict__}
        if ep.peak_contributions is not None:
            doc["peak_contributions"] = ep.peak_contributions.tolist()
        return json.dumps(doc)

    def restore(self, asset: str, snapshot: str) -> None:
        doc = json.loads(snapshot)
        if doc["peak_contributions"] is not None:
            doc["peak_contributions"] = np.asarray(doc["peak_contributions"])
        self._episodes[asset] = _Episode(**doc)

    def clear(self) -> None:
        self._episodes.clear()

    def forget(self, asset: str) -> None:
        """Drop an asset's episode (an open one ends without a `resolved` alert): the runtime
        bounds assets by forgetting the idle ones and those an operator resets (#13)."""
        self._episodes.pop(asset, None)

    def quiet(self, asset: str) -> bool:
        """No episode firing or building up: a score below `info` changes nothing here."""
        ep = self._episodes.get(asset)
        return ep is None or (not ep.firing and ep.above == 0)

    def update(
        self, asset: str, ts: float, score: float, contributions: np.ndarray, values: np.ndarray
    ) -> Alert | None:
        ep = self._episodes.setdefault(asset, _Episode())
        level = self.thresholds.level_of(score)
        if level is None:
            ep.above, ep.below = 0, ep.below + 1
            if ep.firing and ep.below >= self.resolve_after:
                alert = self._alert(asset, ep, "resolved", ts, score, contributions, values)
                self._episodes[asset] = _Episode()
                return alert
            return None
        if ep.above == 0 and not ep.firing:
            ep.start_ts, ep.peak, ep.level, ep.peak_contributions = ts, 0.0, None, None
        ep.above, ep.below = ep.above + 1, 0
        if score > ep.peak:
            ep.peak, ep.peak_contributions = score, contributions.copy()
        peak_level = self.thresholds.level_of(ep.peak)
        starts = not ep.firing and ep.above >= self.fire_after
        rises = ep.firing and LEVELS.index(peak_level) > LEVELS.index(ep.level)
        if not (starts or rises):
            return None
        ep.firing, ep.level = True, peak_level
        return self._alert(asset, ep, "firing", ts, score, contributions, values)

    def _alert(
        self,
        asset: str,
        ep: _Episode,
        state: str,
        ts: float,
        score: float,
        contributions: np.ndarray,
        values: np.ndarray,
    ) -> Alert:
        level = ep.level or "info"
        key = f"{self.device_id}/{asset}/{self.model['id']}@{self.model['version']}/{ep.start_ts!r}"
        alert_id = str(uuid.uuid5(_ID_NAMESPACE, f"{key}/{state}/{level}"))
        # Name the sensors that drove the episode's worst window, not the current one.
        drivers = ep.peak_contributions if ep.peak_contributions is not None else contributions
        order = np.argsort(-drivers, kind="stable")[: self.top_sensors]
        top = [
            {"sensor": self.sensors[i], "contribution": round(float(drivers[i]), 4)} for i in order
        ]
        payload = {
            "id": alert_id,
            "device_id": self.device_id,
            "asset": asset,
            "ts": _iso(ts),
            "level": level,
            "score": round(float(score), 4),
            "peak_score": round(float(ep.peak), 4),
            "model": self.model,
            "sensors": {name: float(v) for name, v in zip(self.sensors, values, strict=True)},
            "top_sensors": top,
            "message": _message(state, level, asset, ep.peak, top),
            "state": state,
            "episode_start": _iso(ep.start_ts),
        }
        return Alert(id=alert_id, asset=asset, state=state, level=level, payload=payload)


def _message(state: str, level: str, asset: str, peak: float, top: list[dict]) -> str:
    drivers = ", ".join(f"{t['sensor']} ({t['contribution']:.0%})" for t in top)
    if state == "resolved":
        return f"{asset}: {level} anomaly resolved (peak score {peak:.2f}; was driven by {drivers})"
    return f"{asset}: {level} anomaly, score {peak:.2f}, driven by {drivers}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
