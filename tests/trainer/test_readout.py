"""The benchmarks' reading of the agent's output (trainer/readout.py) is the agent's own rule."""

from __future__ import annotations

import numpy as np

from agent.alert import AlertTracker
from agent.config import AlertsConfig
from agent.model.manifest import Thresholds
from trainer.readout import FIRE_AFTER, RESOLVE_AFTER, episodes


def test_the_readout_uses_the_agents_default_debounce():
    fields = AlertsConfig.model_fields
    assert (
        fields["fire_after"].default,
        fields["resolve_after"].default,
    ) == (FIRE_AFTER, RESOLVE_AFTER)


def test_episodes_fire_and_close_where_the_alert_tracker_does():
    rng = np.random.default_rng(2)
    scores = np.clip(np.cumsum(rng.normal(0, 0.08, 5000)) % 1.0, 0, 1)
    tracker = AlertTracker(
        device_id="d",
        model={"id": "m", "version": "1"},
        sensors=["a"],
        thresholds=Thresholds(info=0.5, warning=0.75, critical=0.9),
        fire_after=FIRE_AFTER,
        resolve_after=RESOLVE_AFTER,
        top_sensors=1,
    )
    fired, resolved, firing = [], [], False
    for i, s in enumerate(scores):
        alert = tracker.update("a", float(i), float(s), np.ones(1), np.zeros(1))
        if alert is not None and alert.state == "firing" and not firing:
            fired.append(i)  # an episode's first alert (a rise in level fires again)
        elif alert is not None and alert.state == "resolved":
            resolved.append(i)
        firing = (firing or alert is not None) and not (alert and alert.state == "resolved")
    read = episodes(scores, 0.5)
    assert fired and np.flatnonzero(read.fires).tolist() == fired
    closes = np.flatnonzero(read.open[:-1] & ~read.open[1:]) + 1
    assert closes.tolist() == resolved
