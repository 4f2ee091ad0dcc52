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
0.5 (the alert threshold) just past the tolerance and 0.82 at twice it. The score is held (the
largest since the hold began) while a window holds the novel reading (the model's `window`
windows, so that an episode can open: the alert levels want `fire_after` windows in a row),
and after that until a whole window of readings of the sensor that opened the hold is back
in the range it had then (plus the tolerance), at most `memory` windows: a spike alerts once
and briefly, a fault that holds its sensors out of their ranges keeps its episode open while
it lasts, and a level that stays new goes quiet after `memory` windows.

Learning is bounded: one step widens a range by at most `_GROWTH` training ranges (a range
counted as no narrower than a thousandth of the values' size, so that a sensor constant in
training takes a new level in within a few readings, not tens of thousands), so a wild reading
(1e300 from a broken sensor or a hostile publisher) cannot blind the sensor to larger
excursions (it does hide those within the ranges it added, for good); a reading that is not
finite scores 1 and teaches nothing.
"""

from __future__ import annotations

import math
from operator import le
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

_BOUND = 1e30  # the trainer clips training ranges to this; a manifest past it is damaged
# No range widens past float32's largest value (the agent's windows hold no larger reading):
# a state `step` left always loads, whatever the manifest's ranges (at ±1e30 one step grew by
# 2e31).
_WIDEST = float(np.finfo(np.float32).max)
_Value = Annotated[float, Field(ge=-_BOUND, le=_BOUND)]
_GROWTH = 10.0
# The training range the growth counts in is at least this share of the values' size: for a
# sensor constant in training the range is a float32 step, and a setpoint moved from 20 to 21
# stayed novel for some 32,000 readings at 10 such steps a reading.
_LEAST_RANGE = 1e-3
_EPS32 = 2.0**-23  # a float32 reading's relative resolution
# held score, windows since the hold began or was renewed, the sensor that opened it (-1: no
# hold), the way back (that sensor's range then, widened by the tolerance) and how many
# windows in a row it has been back
_HEADER = 6
_QUIET = [0.0, 0.0, -1.0, 0.0, 0.0, 0.0]


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
        default=1280,
        ge=1,
        le=100_000,
        description="Most windows a novel reading's score is held for while its sensor stays "
        "out of its former range.",
    )
    # One per sensor, as many as the model has (the manifest checks the count; a cap of 256
    # here made the trainer fail on wider data that trained before range novelty).
    low: list[_Value] = Field(min_length=1, description="Each sensor's lowest training value.")
    high: list[_Value] = Field(min_length=1, description="Each sensor's highest training value.")

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
    """Per-asset state as plain floats: [held score, age, sensor, back lo, back hi, back
    (the hold: `_HEADER`), lo (n), hi (n)]."""

    def __init__(self, params: NoveltyParams, n_sensors: int, window: int = 1) -> None:
        if len(params.low) != n_sensors:
            raise ValueError(
                f"novelty ranges for {len(params.low)} sensors, the model has {n_sensors}"
            )
        self.params = params
        self.n = n_sensors
        self.state_size = _HEADER + 2 * n_sensors
        self.memory = float(params.memory)
        self.window = float(window)
        self.growth = [
            _GROWTH * max(hi - lo, _LEAST_RANGE * max(abs(lo), abs(hi), 1.0))
            for lo, hi in zip(params.low, params.high, strict=True)
        ]

    def new_state(self) -> list[float]:
        p = self.params
        return [*_QUIET, *p.low, *p.high]

    def valid_state(self, state: np.ndarray) -> bool:
        """Whether `state` is one `step` can have left: a score in [0, 1], an age that counts
        windows up to `memory` (or the window, while a window still holds the novel reading),
        a sensor of the model, each range in order and within the bounds readings have."""
        if len(state) != self.state_size:
            return False
        held, age, sensor, back_lo, back_hi, back = state[:_HEADER].tolist()
        lo, hi = state[_HEADER : _HEADER + self.n], state[_HEADER + self.n :]
        return (
            0.0 <= held <= 1.0
            and 0.0 <= age <= max(self.memory, self.window)
            and age == int(age)
            and -1.0 <= sensor < self.n
            and sensor == int(sensor)
            and back_lo <= back_hi
            and 0.0 <= back <= self.window
            and back == int(back)
            and bool((lo <= hi).all())
            and bool((np.abs(state[3:5]) <= 1e3 * _WIDEST).all())  # ranges plus tolerance
            and bool((np.abs(state[_HEADER:]) <= _WIDEST).all())
        )

    def _widen(self, state: list[float], k: int, x: float, lo: float, hi: float) -> float:
        """How far sensor k's reading x is past its range [lo, hi], in ranges; the range takes
        it in, by at most `growth`. Not a number: infinitely far, and nothing learnt."""
        if x != x or x in (math.inf, -math.inf):
            return math.inf
        span = max(hi - lo, _resolution(lo, hi))
        if x > hi:
            state[_HEADER + self.n + k] = min(x, hi + self.growth[k], _WIDEST)
            return (x - hi) / span
        state[_HEADER + k] = max(x, lo - self.growth[k], -_WIDEST)
        return (lo - x) / span

    def _farthest(
        self, state: list[float], reading: list[float], lows: list[float], highs: list[float]
    ) -> tuple[float, int, tuple[float, float]]:
        """How far the reading farthest past its sensor's range is past it, which sensor's
        it is and that range widened by the tolerance (the way back); every range takes its
        sensor's reading in."""
        tol = self.params.tolerance
        worst, which, way_back = 0.0, -1, (0.0, 0.0)
        for k, (x, lo, hi) in enumerate(zip(reading, lows, highs, strict=True)):
            if not lo <= x <= hi:
                past = self._widen(state, k, x, lo, hi)
                if past > worst:
                    margin = tol * max(hi - lo, _resolution(lo, hi))
                    worst, which, way_back = past, k, (lo - margin, hi + margin)
        return worst, which, way_back

    def step(self, state: list[float], reading: list[float]) -> float:
        """The window's novelty score, given its newest `reading` (one value per sensor);
        updates `state` in place (the ranges take the reading in)."""
        n = self.n
        lows, highs = state[_HEADER : _HEADER + n], state[_HEADER + n :]
        if len(reading) != n:
            raise ValueError(f"a reading of {len(reading)} values for {n} sensors")
        # The common case, every reading inside its range: two comparisons per sensor, in C;
        # and with no hold under way, nothing more to do.
        if all(map(le, lows, reading)) and all(map(le, reading, highs)):
            return self.quiet(state, reading)
        worst, which, way_back = self._farthest(state, reading, lows, highs)
        tol = self.params.tolerance
        if worst > tol:
            score = 1.0 if worst == math.inf else 1.0 - 0.5 * math.exp(-(worst - tol) / tol)
            if state[0] > 0.0:  # a hold goes on: its sensor and way back stay the first's
                state[0], state[1], state[5] = max(state[0], score), 0.0, 0.0
            else:
                state[:_HEADER] = [score, 0.0, float(which), *way_back, 0.0]
            return state[0]
        return self.quiet(state, reading)

    def within(self, state: list[float], newest: np.ndarray) -> list[bool]:
        """Which of a batch's newest readings [batch, n] (floats) lie within every range as
        the ranges stand before the batch, in numpy at once. Ranges only widen, so such a
        reading is within them at its own turn too, where `step` would only do `quiet`'s work:
        a batch's worth of the per-reading check for a few numpy calls."""
        n = self.n
        lows, highs = np.asarray(state[_HEADER : _HEADER + n]), np.asarray(state[_HEADER + n :])
        return ((newest >= lows) & (newest <= highs)).all(axis=1).tolist()

    def quiet(self, state: list[float], reading: list[float]) -> float:
        """`step` for a reading within every range: 0, or the hold under way."""
        return 0.0 if state[0] == 0.0 else self._held(state, reading)

    def _held(self, state: list[float], reading: list[float]) -> float:
        """A hold under way, in a window with nothing far enough past its range to renew it:
        held while a window holds the novel reading, then until a whole window is back."""
        age = state[1] + 1.0
        x = reading[int(state[2])]
        back = 0.0 if not state[3] <= x <= state[4] else min(state[5] + 1.0, self.window)
        if age < self.window or (back < self.window and age < self.memory):
            state[1], state[5] = age, back
            return state[0]
        state[:_HEADER] = _QUIET  # the hold ends
        return 0.0
