"""Daily profile: a reading far from what its sensor usually reads at this hour of the day (#15).

Many streams follow the clock: traffic, demand, temperatures, machines on shifts. A value that
is ordinary at noon can be an anomaly at midnight, and a day that stays flat where it should
peak (a holiday, a stopped line) never leaves the range the sensor has shown. The window's
mean and spread (the `online` model) and the range (novelty) miss both; NAB's realKnownCause
and artificial series are full of them (docs/detection.md, "The daily profile").

Per sensor and hour of the day (UTC, from the reading's timestamp), a mean and a variance are
learnt as readings arrive, at rate max(1 / count, `rate`) with each step limited to 10
training spreads, and shrunk toward the training rows' overall mean and variance while the
hour has few readings (weight count / (count + 3)). A reading's statistic is its squared
distance from its hour's mean in its hour's spreads, averaged over sensors; its logit is
(statistic − `median`) / `scale` − 2, `median` and `scale` (90th percentile − median) from the
same recurrence run over the training rows, so the agent's likelihood reads it like the
graph's score (agent/model/stream.py runs a second likelihood over it).

The state is 24 counts and 24 means and variances per sensor, whatever the stream's length.
Without a reading's time (a Python API call given none) the profile is left out.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

HOURS = 24
MAX_SENSORS = 64  # the state is 48 floats per sensor, committed with every batch
_BOUND = 1e30
_Value = Annotated[float, Field(ge=-_BOUND, le=_BOUND)]
_Spread = Annotated[float, Field(ge=1e-30, le=_BOUND)]
_SHRINK = 3.0
_STEP = 10.0
_OFFSET = 2.0
_CLIP = 16.0
_FLOOR = 1e-3  # of the training variance: an hour that never varied does not divide by 0


class ProfileParams(BaseModel):
    """The overall training level per sensor, the statistic's calibration and its baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(
        default=0.01, gt=0, le=1, description="Least weight of a new reading in its hour's mean."
    )
    mean: list[_Value] = Field(
        min_length=1, max_length=MAX_SENSORS, description="Each sensor's training mean."
    )
    spread: list[_Spread] = Field(
        min_length=1, max_length=MAX_SENSORS, description="Each sensor's training spread."
    )
    median: _Value = Field(description="The statistic's median over the training rows.")
    scale: _Spread = Field(description="Its 90th percentile minus its median.")
    baseline_mean: float = Field(
        ge=-_CLIP, le=_CLIP, description="Mean logit over the training rows."
    )
    baseline_std: float = Field(ge=0, le=100, description="Spread of that logit.")
    baseline_weight: int = Field(
        ge=0, le=1_000_000, description="How many windows that baseline counts as."
    )

    @model_validator(mode="after")
    def _sizes(self) -> ProfileParams:
        if len(self.mean) != len(self.spread):
            raise ValueError("profile mean and spread: one of each per sensor")
        return self


def hour_of(t: float) -> int:
    """The UTC hour of the day of a time in epoch seconds; -1 when it is not a number."""
    if not math.isfinite(t):
        return -1
    return int(t // 3600.0) % HOURS


class Profile:
    """Per-asset state as plain floats: [count (24), mean (24 d), variance (24 d)]."""

    def __init__(self, params: ProfileParams, n_sensors: int) -> None:
        if len(params.mean) != n_sensors:
            raise ValueError(f"profile of {len(params.mean)} sensors, the model has {n_sensors}")
        self.params = params
        self.d = n_sensors
        self.state_size = HOURS * (1 + 2 * n_sensors)
        self.var0 = [s * s for s in params.spread]
        self.floor = [_FLOOR * v for v in self.var0]
        self.limit = [_STEP * s for s in params.spread]
        # What `statistic` reads per sensor, in one list (the step's limit both ways), and what
        # it and `logit` read per reading: attributes of self cost less than a pydantic model's.
        self.sensors = [
            (m0, v0, low, lim, -lim)
            for m0, v0, low, lim in zip(params.mean, self.var0, self.floor, self.limit, strict=True)
        ]
        self.rate = params.rate
        self.median, self.scale = params.median, params.scale

    def new_state(self) -> list[float]:
        return [0.0] * HOURS + list(self.params.mean) * HOURS + self.var0 * HOURS

    def valid_state(self, state: np.ndarray) -> bool:
        """Counts that count, variances positive and within what steps of `_STEP` training
        spreads can leave (100 training variances)."""
        if len(state) != self.state_size:
            return False
        counts, var = state[:HOURS], state[HOURS + HOURS * self.d :]
        ceiling = np.tile(np.asarray(self.var0) * _STEP * _STEP * (1 + 1e-9), HOURS)
        return bool(
            ((counts >= 0) & (counts == np.floor(counts))).all()
            and ((var > 0) & (var <= ceiling + 1e-300)).all()
            and (np.abs(state[HOURS:]) <= 2 * _BOUND).all()
        )

    def statistic(self, state: list[float], hour: int, reading: list[float]) -> float:
        """The reading's squared distance from its hour's level, in its hour's spreads,
        averaged over sensors; then the hour learns the reading. `hour` -1: 0, nothing learnt."""
        if hour < 0:
            return 0.0
        total = sum(reading)
        if total - total != 0.0:  # a reading not finite (or summing past float64): teaches nothing
            return math.inf
        d = self.d
        count = state[hour]
        w = count / (count + _SHRINK)
        rest = 1.0 - w
        k, gap = HOURS + hour * d, HOURS * d  # the hour's first mean; its variance is gap on
        total = 0.0
        count += 1.0
        a = 1.0 / count if count * self.rate < 1.0 else self.rate
        keep, learn = 1.0 - a, count > 1.0
        for x, (m0, v0, low, lim, below) in zip(reading, self.sensors, strict=True):
            m, v = state[k], state[k + gap]
            r = x - (w * m + rest * m0)
            total += r * r / (w * v + rest * v0 + low)
            step = x - m
            if step < below:
                step = below
            elif step > lim:
                step = lim
            move = a * step  # a · step² is (a · step) · step
            state[k] = m + move
            v = keep * (v + move * step) if learn else v0
            state[k + gap] = v if v > low else low
            k += 1
        state[hour] = count
        return total / d

    def logit(self, statistic: float) -> float:
        u = (statistic - self.median) / self.scale - _OFFSET
        return -_CLIP if u < -_CLIP else (_CLIP if u > _CLIP else u)
