"""The trial of a switched version: the health the pipeline reports, judged once it is due;
and, at start, a trial another process began and never finished."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
