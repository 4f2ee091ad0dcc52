"""Range novelty: a reading beyond every value its sensor has shown so far (#15).

After the "spatial anomaly" Numenta added to its HTM detector for NAB: a value outside the
range a sensor has ever shown, by more than a tolerance, is anomalous whatever its context.
The stream's other scores miss it when it is short: a spike of one reading moves a 20-reading
window's mean by a twentieth, and the likelihood then averages that over `short_window`
windows. The range is seeded with the training rows' (`low`, `high` in the manifest) and
widens as readings arrive, so a level that has been seen once is not novel again, and a slow
drift, whose every reading is only a little past the last, never is.

A reading x of a sensor whose range is [lo, hi] is past it by e = (x − hi) / (hi − lo) (or
(lo − x) / (hi − lo)); past `tolerance` it scores 1 − exp(−(e − tolerance) / tolerance) / 2,
0.5 (the alert threshold) just past the tolerance and 0.82 at twice it. The window holds that
score for `memory` windows (the largest since the last novel reading), so an episode opens
(the alert levels want `fire_after` windows in a row) and stays open a while.

Learning is bounded: one step widens a range by at most `_GROWTH` training ranges, so a wild
reading (1e300 from a broken sensor or a hostile publisher) cannot blind the sensor for good; a
reading that is not finite scores 1 and teaches nothing.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SENSORS = 256
_BOUND = 1e30  # no reading the agent accepts is past float32's range
_Value = Annotated[float, Field(ge=-_BOUND, le=_BOUND)]
_GROWTH = 10.0
_EPS32 = 2.0**-23  # a float32 reading's relative resolution
_HEADER = 2  # held score, windows since the last novel reading


class NoveltyParams(BaseModel):
    """Each sensor's training range and how far past it a reading must be; from the trainer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerance: float = Field(
        default=0.3,
        gt=0,
        le=100,
        description="How far past the range seen so far a reading must be, in ranges, to score "
        "0.5 (the alert threshold).",
    )
    memory: int = Field(
        default=320,
        ge=1,
        le=100_000,
        description="Windows a novel reading's score is held for.",
    )
    low: list[_Value] = Field(
        min_length=1, max_length=MAX_SENSORS, description="Each sensor's lowest training value."
    )
    high: list[_Value] = Field(
        min_length=1, max_length=MAX_SENSORS, description="Each sensor's highest training value."
    )

    @model_validator(mode="after")
    def _ranges(self) -> NoveltyParams:
        if len(self.low) != len(self.high):
            raise ValueError("novelty low and high: one of each per sensor")
        if any(lo > hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError("novelty low must not be above high")
        return self


def _resolution(lo: float, hi: float) -> float:
    """The smallest range that counts: a float32 step at the values' size, so a sensor that
    never moved in training (a stuck valve) makes its first real move novel, not a rounding."""
    return max(abs(lo), abs(hi), 1.0) * _EPS32


class Novelty:
    """Per-asset state as plain floats: [held score, age, lo (n), hi (n)]."""

    def __init__(self, params: NoveltyParams, n_sensors: int) -> None:
        if len(params.low) != n_sensors:
            raise ValueError(
                f"novelty ranges for {len(params.low)} sensors, the model has {n_sensors}"
            )
        self.params = params
        self.n = n_sensors
        self.state_size = _HEADER + 2 * n_sensors
        self.memory = float(params.memory)
        self.growth = [
            _GROWTH * max(hi - lo, _resolution(lo, hi))
            for lo, hi in zip(params.low, params.high, strict=True)
        ]

    def new_state(self) -> list[float]:
        p = self.params
        return [0.0, float(p.memory), *p.low, *p.high]

    def valid_state(self, state: np.ndarray) -> bool:
        """Whether `state` is one `step` can have left: a score in [0, 1], an age that counts
        windows, each range in order and within the bounds readings have."""
        if len(state) != self.state_size:
            return False
        held, age = float(state[0]), float(state[1])
        lo, hi = state[_HEADER : _HEADER + self.n], state[_HEADER + self.n :]
        return (
            0.0 <= held <= 1.0
            and 0.0 <= age == int(age)
            and bool((lo <= hi).all())
            and bool((np.abs(state[_HEADER:]) <= _BOUND * 2).all())
        )

    def _widen(self, state: list[float], k: int, x: float, lo: float, hi: float) -> float:
        """How far sensor k's reading x is past its range [lo, hi], in ranges; the range takes
        it in, by at most `growth`. Not a number: infinitely far, and nothing learnt."""
        if x != x or x in (math.inf, -math.inf):
            return math.inf
        span = max(hi - lo, _resolution(lo, hi))
        if x > hi:
            state[_HEADER + self.n + k] = min(x, hi + self.growth[k])
            return (x - hi) / span
        state[_HEADER + k] = max(x, lo - self.growth[k])
        return (lo - x) / span

    def step(self, state: list[float], reading: list[float]) -> float:
        """The window's novelty score, given its newest `reading` (one value per sensor);
        updates `state` in place (the ranges take the reading in)."""
        n, tol = self.n, self.params.tolerance
        worst = 0.0
        # The common case, every reading inside its range, costs two comparisons per sensor.
        lows, highs = state[_HEADER : _HEADER + n], state[_HEADER + n :]
        for k, (x, lo, hi) in enumerate(zip(reading, lows, highs, strict=True)):
            if not lo <= x <= hi:
                worst = max(worst, self._widen(state, k, x, lo, hi))
        memory = self.memory
        age = state[1] + 1.0  # windows since the last novel reading, this one included
        if worst > tol:
            score = 1.0 if worst == math.inf else 1.0 - 0.5 * math.exp(-(worst - tol) / tol)
            held = state[0] if age < memory else 0.0
            state[0], state[1] = (held if held > score else score), 0.0
            return state[0]
        if age < memory:
            state[1] = age
            return state[0]
        state[0], state[1] = 0.0, memory  # quiet: the age stays bounded
        return 0.0
