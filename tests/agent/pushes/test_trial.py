"""The trial of a switched version (agent/pushes/trial.py): one verdict, given by the `Trial`,
which records it on the desk and hands back the pushes that waited for it."""

from __future__ import annotations

import numpy as np

from agent.pushes.desk import Desk
from agent.pushes.trial import Trial
from tests.agent.pushes.conftest import BASE, signed


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _on_trial(d: Desk, key) -> tuple[Trial, Clock, bytes]:
    """Config v5 accepted and switched to; a model push waiting for its trial; the trial."""
    payload, _, _ = signed(key, "config", 5, b"[alerts]\nfire_after = 4\n")
    assert d.offer(f"{BASE}/config", payload).switch
    model_push, _, _ = signed(key, "model", 6, b"\x08not yet looked at")
    assert d.offer(f"{BASE}/model", model_push) is None
    assert d.state.pending is not None
    clock = Clock(float(d.state.pending["monotonic"]))
    trial = Trial.begun_here(d, d.config.fleet, clock)
    assert trial is not None
    return trial, clock, model_push


def test_there_is_no_trial_without_a_switch_made_by_this_process(desk):
    d, key = desk
    assert Trial.begun_here(d, d.config.fleet) is None
    payload, _, _ = signed(key, "config", 5, b"[alerts]\nfire_after = 4\n")
    assert d.offer(f"{BASE}/config", payload).switch
    assert Trial.begun_here(d, d.config.fleet) is not None
    d.state.pending = {**d.state.pending, "process": "1-another-process"}
    assert Trial.begun_here(d, d.config.fleet) is None, "recover_interrupted's, not ours"


def test_a_healthy_version_passes_and_hands_back_the_waiting_pushes(desk):
    d, key = desk
    trial, clock, model_push = _on_trial(d, key)
    trial.health.consuming = True
    clock.now += d.config.fleet.health_check_s - 1
    assert trial.judge() is None, "undecided before the health check's end"
    assert d.state.pending is not None
    clock.now += 1
    verdict = trial.judge()
    assert verdict is not None and verdict.passed and verdict.reason == ""
    assert verdict.deferred == [(f"{BASE}/model", model_push)]
    assert d.deferred == [], "handed back, not kept"
    assert d.state.pending is None and d.state.last_push["status"] == "applied"
    saved = Desk(d.config, d.source, d.sensors).state
    assert saved.pending is None and saved.current["config"].version == 5
    assert trial.judge() is None, "one verdict per trial"


def test_non_finite_scores_roll_the_version_back_at_once(desk):
    d, key = desk
    trial, _, _ = _on_trial(d, key)
    trial.health.observe(np.array([np.nan, 0.1]), [None, None])
    verdict = trial.judge()
    assert verdict is not None and not verdict.passed
    assert verdict.reason == "the model gave 1 non-finite scores"
    assert verdict.deferred == [], "a rollback switches: the next desk hears them again"
    assert d.state.current == {} and d.state.pending is None
    assert d.state.last_push["status"] == "rolled_back"
    assert d.state.last_push["reason"] == verdict.reason
    saved = Desk(d.config, d.source, d.sensors).state
    assert saved.current == {} and saved.last_push["status"] == "rolled_back"
    assert trial.judge() is None


def test_a_critical_storm_rolls_the_version_back(desk):
    d, key = desk
    trial, _, _ = _on_trial(d, key)
    windows = d.config.fleet.health_min_windows
    levels = ["critical"] * (windows // 2 + 1) + [None] * (windows - windows // 2 - 1)
    trial.health.observe(np.full(windows, 0.9), levels)
    verdict = trial.judge()
    assert verdict is not None and not verdict.passed
    assert verdict.reason.startswith("critical on 55% of 20 windows"), verdict.reason
    assert d.state.current == {}


def test_a_version_not_consuming_by_the_end_is_rolled_back(desk):
    d, key = desk
    trial, clock, _ = _on_trial(d, key)
    clock.now += d.config.fleet.health_check_s
    verdict = trial.judge()
    assert verdict is not None and not verdict.passed
    assert verdict.reason == "not consuming readings by the end of the health check"
    assert d.state.last_push["status"] == "rolled_back"
