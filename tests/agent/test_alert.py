"""Alert episodes: debounce, level rises, resolution, stable ids and named drivers."""

from __future__ import annotations

import numpy as np

from agent.alert import AlertTracker
from agent.model.manifest import Thresholds

SENSORS = ["flow", "pressure", "current"]
PRESSURE = np.array([0.1, 0.8, 0.1])
FLOW = np.array([0.7, 0.2, 0.1])


def _tracker() -> AlertTracker:
    return AlertTracker(
        device_id="gw",
        model={"id": "m", "version": "1"},
        sensors=SENSORS,
        thresholds=Thresholds(info=0.5, warning=0.75, critical=0.9),
        fire_after=3,
        resolve_after=2,
        top_sensors=2,
    )


def _feed(tracker: AlertTracker, scores: list[float], drivers: list[np.ndarray]) -> list:
    """Alerts (or None) per reading, one reading a minute from ts 1000."""
    values = np.array([1.0, 2.0, 3.0])
    return [
        tracker.update("pump", 1000.0 + 60 * i, s, d, values)
        for i, (s, d) in enumerate(zip(scores, drivers, strict=True))
    ]


def test_an_episode_fires_after_the_debounce_rises_and_resolves():
    scores = [0.6, 0.6, 0.1, 0.6, 0.8, 0.6, 0.95, 0.2, 0.6, 0.2, 0.2, 0.7]
    drivers = [FLOW] * 6 + [PRESSURE] + [FLOW] * 5
    out = _feed(_tracker(), scores, drivers)
    fired = {i: a for i, a in enumerate(out) if a is not None}
    # 2 above then a dip: no alert; 3 in a row: fires at the third, at the peak's level.
    assert sorted(fired) == [5, 6, 10]
    first, rise, resolved = fired[5], fired[6], fired[10]
    assert (first.state, first.level) == ("firing", "warning")
    assert first.payload["episode_start"] == "1970-01-01T00:19:40.000Z"  # reading 3, ts 1180
    assert (rise.state, rise.level) == ("firing", "critical") and rise.id != first.id
    # One window below does not resolve (resolve_after=2); two in a row do.
    assert (resolved.state, resolved.level) == ("resolved", "critical")
    assert resolved.payload["peak_score"] == 0.95
    # The drivers named are the worst window's (pressure), not the resolving reading's (flow).
    assert [t["sensor"] for t in resolved.payload["top_sensors"]] == ["pressure", "flow"]
    assert resolved.payload["message"].startswith("pump: critical anomaly resolved")
    # Reading 11 (0.7) starts a new debounce; it needs three in a row again.
    assert out[11] is None


def test_the_same_input_gives_the_same_alert_ids():
    scores, drivers = [0.8] * 4 + [0.1] * 2, [PRESSURE] * 6
    first = [a.id for a in _feed(_tracker(), scores, drivers) if a]
    second = [a.id for a in _feed(_tracker(), scores, drivers) if a]
    assert len(first) == 2 and first == second and len(set(first)) == 2
