"""The trial of a switched version: the health the pipeline reports, the one verdict on it
(`Trial`), and, at start, a trial another process began and never finished."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.config import FleetConfig
from agent.pushes.desk import Desk
from agent.pushes.state import PROCESS, FleetState, fleet_dir


@dataclass
class Health:
    """What the pipeline saw since a switch, judged at the end of the health check.

    The trial is timed on `clock`, a monotonic one: a wall-clock step (a gateway without RTC
    catching up with NTP) must neither end a trial early nor stretch it (issue 13). A monotonic
    reading means nothing in another process; a trial never outlives the process that began
    it (`recover_interrupted` rolls back one that did).
    """

    started: float  # on `clock`
    duration: float
    clock: Callable[[], float] = time.monotonic
    consuming: bool = False
    windows: int = 0
    critical: int = 0
    not_finite: int = 0

    def observe(self, scores: np.ndarray, levels: list[str | None]) -> None:
        self.windows += len(scores)
        self.not_finite += int(np.count_nonzero(~np.isfinite(scores)))
        self.critical += levels.count("critical")

    def verdict(self, min_windows: int, max_critical: float) -> str | None:
        """None while undecided; "" when healthy; else why not."""
        if self.not_finite:
            return f"the model gave {self.not_finite} non-finite scores"
        if self.windows >= min_windows and self.critical / self.windows > max_critical:
            share = self.critical / self.windows
            return f"critical on {share:.0%} of {self.windows} windows (over {max_critical:.0%})"
        if self.clock() - self.started < self.duration:
            return None
        if not self.consuming:
            return "not consuming readings by the end of the health check"
        return ""


@dataclass
class Verdict:
    """How a trial ended, already recorded and saved: `passed`, or rolled back for `reason`."""

    passed: bool
    reason: str = ""
    deferred: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, payload)


class Trial:
    """The one owner of a trial's verdict. The pipeline feeds `health`; the runtime asks
    `judge` once per turn, and a trial that has ended has itself marked the version passed or
    rolled it back (and saved that) and hands back the pushes that waited for it: the runtime
    only re-queues them, or switches back to what runs now."""

    def __init__(self, desk: Desk, fleet: FleetConfig, health: Health) -> None:
        self.desk = desk
        self.fleet = fleet
        self.health = health
        self.ended = False

    @classmethod
    def begun_here(
        cls, desk: Desk, fleet: FleetConfig, clock: Callable[[], float] = time.monotonic
    ) -> Trial | None:
        """The trial of the switch this process made, if one is pending: a monotonic start
        means nothing elsewhere, and one another process began is `recover_interrupted`'s."""
        pending = desk.state.pending
        if pending is None or pending.get("process") != PROCESS:
            return None
        return cls(desk, fleet, Health(float(pending["monotonic"]), fleet.health_check_s, clock))

    def judge(self) -> Verdict | None:
        """The verdict once it is in, given once; None while undecided and after that."""
        if self.ended:
            return None
        fleet = self.fleet
        reason = self.health.verdict(fleet.health_min_windows, fleet.health_max_critical_share)
        if reason is None:
            return None
        self.ended = True
        if reason == "":
            self.desk.passed()
            return Verdict(True, deferred=self.desk.take_deferred())
        self.desk.roll_back(reason)
        return Verdict(False, reason)


def recover_interrupted(data_dir: Path) -> bool:
    """At start: a switch whose health check another process began and never finished (it
    died, or the machine did) failed it. Roll back before anything loads; True if it did."""
    pending = FleetState.load(fleet_dir(data_dir)).pending
    if pending is None or pending.get("process") == PROCESS:
        return False
    return abandon_pending(data_dir, "the agent stopped during the health check")


def abandon_pending(data_dir: Path, reason: str) -> bool:
    """The version on trial failed before it could be judged: roll it back now."""
    folder = fleet_dir(data_dir)
    state = FleetState.load(folder)
    if state.pending is None:
        return False
    state.roll_back(reason)
    state.save(folder)
    return True
