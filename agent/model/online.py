"""A normal model that keeps learning on the gateway (#15 item 2): the `online` stream method.

Each window is summarised by every sensor's mean and standard deviation over the window (the
features the `online` detector's graph uses). The normal model is, per feature, a mean and a
variance, seeded from training and then updated as windows arrive by an exponential average
(rate `learning_rate`). The window's raw score is the mean over features of z², z the feature's
distance from the learnt mean in learnt spreads, and `(raw − threshold) / scale` is its logit,
the same calibration as the graph's, so before any learning the two agree exactly.

Learning is bounded so that a long fault is not learnt as normal before it has fired (the
windowed Gaussian of NAB's baselines learns from everything; contextual and KNN detectors such
as CAD OSE and KNN CAD learn only from what they did not flag): while the asset alerts the rate
is multiplied by the stream's `alarm_learning`, and no variance shrinks below a quarter of its
training value, so a quiet spell cannot make the model hair-triggered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce
from operator import add, mul, sub, truediv
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_FEATURES = 512
# No export gives a value past float32's readings (the trainer clips standardized features to
# ±1e30) nor a spread whose square is 0 or infinite in float64: such a manifest is damaged or
# hostile, and would score every window as the worst, or none as anything.
_BOUND = 1e30
_Value = Annotated[float, Field(ge=-_BOUND, le=_BOUND)]
_Spread = Annotated[float, Field(ge=1e-30, le=_BOUND)]
_CLIP = 16.0
_STEP = 10.0


class OnlineParams(BaseModel):
    """The initial normal model and how fast it learns; fitted by the trainer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: list[_Value] = Field(
        min_length=2, max_length=MAX_FEATURES, description="Feature means (window mean, std)."
    )
    scale: list[_Spread] = Field(
        min_length=2, max_length=MAX_FEATURES, description="Feature spreads at training."
    )
    threshold: _Value = Field(description="Raw score that maps to logit 0 (score 0.5).")
    spread: _Spread = Field(description="Raw score per logit unit.")
    learning_rate: float = Field(
        default=0.001, ge=0, le=1, description="Weight of each new window in the normal model."
    )

    @model_validator(mode="after")
    def _consistent(self) -> OnlineParams:
        if len(self.mean) != len(self.scale) or len(self.mean) % 2:
            raise ValueError("online mean and scale: one mean and one std feature per sensor")
        values = np.asarray(self.mean + self.scale + [self.threshold, self.spread])
        if not np.isfinite(values).all() or min(self.scale) <= 0:
            raise ValueError("online model values must be finite, spreads positive")
        return self


class OnlineModel:
    """Per-asset state: [mean (d), variance (d)] as one float64 array."""

    def __init__(self, params: OnlineParams, window: int, n_sensors: int) -> None:
        if len(params.mean) != 2 * n_sensors:
            raise ValueError(
                f"online model of {len(params.mean)} features for {n_sensors} sensors "
                f"(expected {2 * n_sensors})"
            )
        self.params = params
        self.d = len(params.mean)
        self.state_size = 2 * self.d
        self.floor = [0.25 * s * s for s in params.scale]
        self.limit = [_STEP * s for s in params.scale]
        self.ceiling = np.asarray(self.limit) ** 2 * (1 + 1e-9)  # rounding's room
        # Read once per window: attributes of self cost less than a pydantic model's.
        self.threshold, self.spread = params.threshold, params.spread
        self.learning_rate = params.learning_rate

    def new_state(self) -> np.ndarray:
        p = self.params
        return np.concatenate([np.asarray(p.mean), np.asarray(p.scale) ** 2])

    def valid_state(self, state: np.ndarray) -> bool:
        """Whether `state` is one `step` can have left: variances positive and, as each step is
        clipped to _STEP training spreads, at most _STEP² training variances."""
        var = state[self.d :]
        return len(state) == self.state_size and bool(((var > 0) & (var <= self.ceiling)).all())

    def prepare(self, windows: np.ndarray) -> list[list[float]]:
        """The features of a batch of windows [batch, W, n] → [batch][2n] (stateless, so done
        for the whole batch at once): each sensor's mean and std over the window, bit for bit
        as numpy's `mean` and `std` give them (the scores must not depend on the path taken).

        numpy sums along a contiguous axis pairwise and across a strided one in sequence: a
        single sensor's window is summed pairwise, several sensors' in sequence. A window alone
        (the live case) of few readings is summed in plain floats, in numpy's order, as numpy's
        calls would cost more than the sums; other batches in numpy, with the window's axis
        outermost so that each step of the sequence adds the whole batch at once (with the
        window's axis in the middle numpy adds a few sensors at a time)."""
        windows = np.asarray(windows)
        if windows.dtype.kind != "f":  # integers past 2**53 would add up exactly in plain ints
            windows = windows.astype(np.float64)
        count, length, n = windows.shape
        if count == 1 and length * n <= _PLAIN_READINGS:
            if n == 1:
                return [_plain_features(windows.reshape(1, length).tolist(), length, _pairwise)]
            return [_plain_features(windows[0].T.tolist(), length, _sequential)]
        # Wild readings overflow to inf here; the model scores and bounds them itself.
        with np.errstate(over="ignore", invalid="ignore"):
            if n == 1:
                return _pairwise_features(windows)
            return _sequential_features(windows)

    def step(self, state: list[float], feats: list[float], gate: float) -> float:
        """The logit of the window of features `feats`, then the model learns from it at `gate`
        times its rate (the stream's `alarm_learning` while the asset alerts, else 1). `state`
        is `new_state()` as a list, updated in place: d is 2 to a few dozen, so plain floats
        cost less than a numpy call per window.

        Each feature's step is limited to `_STEP` training spreads, so that one wild window (a
        sensor reading 1e100) moves the model by a bounded amount; a window whose score is not
        finite scores as high as a score can and teaches nothing. The limit is the training
        spread, not the learnt one: against the learnt spread each wild window could grow the
        variance by a factor 1 + 100 rate, compounding, until no real fault stood out of it;
        against a fixed one the variance cannot pass 100 training variances."""
        d = self.d
        variances = state[d:]
        diffs = list(map(sub, feats, state))  # `state` begins with the d means
        raw = sum(map(truediv, map(mul, diffs, diffs), variances)) / d
        if raw != raw or raw == math.inf:
            return _CLIP
        u = (raw - self.threshold) / self.spread
        rate = self.learning_rate * gate
        if rate > 0.0:
            keep = 1.0 - rate
            means, learnt = [], []
            bounds = zip(diffs, state, variances, self.limit, self.floor, strict=False)
            for x, m, var, lim, low in bounds:
                x = -lim if x < -lim else (lim if x > lim else x)
                means.append(m + rate * x)
                v = keep * (var + rate * x * x)
                learnt.append(v if v > low else low)
            state[:] = means + learnt
        return -_CLIP if u < -_CLIP else (_CLIP if u > _CLIP else u)


# A window alone of up to this many readings costs less in plain floats than in numpy's calls
# (`python -m scripts.bench_stream --features`: about where the two cost the same for one or
# two sensors; at eight sensors their own cost makes it even at 40 readings and 1.7 µs worse
# at 64. A batch of windows costs numpy hardly more than one, and plain floats as many times
# more). At most 128, the longest run numpy sums in one block.
_PLAIN_READINGS = 64


def _pairwise(values: list[float]) -> float:
    """numpy's `add.reduce` of a run of at most 128 float64 in a row: its `pairwise_sum` (eight
    running sums over the run's whole blocks of eight, added as a tree, then the rest; a longer
    run it splits in two) added to 0.0."""
    size = len(values)
    if size < 8:
        total = -0.0
        for x in values:
            total += x
        return 0.0 + total
    r0, r1, r2, r3, r4, r5, r6, r7 = values[:8]
    end = size - size % 8
    for i in range(8, end, 8):
        x0, x1, x2, x3, x4, x5, x6, x7 = values[i : i + 8]
        r0, r1, r2, r3, r4, r5, r6, r7 = (
            r0 + x0,
            r1 + x1,
            r2 + x2,
            r3 + x3,
            r4 + x4,
            r5 + x5,
            r6 + x6,
            r7 + x7,
        )
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for x in values[end:]:
        total += x
    return 0.0 + total


def _sequential(values: list[float]) -> float:
    """numpy's `add.reduce` of float64 across a strided axis: 0.0, then each value in turn."""
    return reduce(add, values, 0.0)


def _plain_features(
    sensors: list[list[float]], length: int, total: Callable[[list[float]], float]
) -> list[float]:
    """A window's [means, stds] from each sensor's readings, in plain floats: numpy's
    operations, its sums in its order (`total`)."""
    means = [total(readings) / length for readings in sensors]
    stds = [
        math.sqrt(total([(d := x - mean) * d for x in readings]) / length)
        for readings, mean in zip(sensors, means, strict=True)
    ]
    return means + stds


def _pairwise_features(windows: np.ndarray) -> list[list[float]]:
    """[mean, std] of a single sensor's windows [batch, W, 1], each window's sum pairwise."""
    w = np.asarray(windows, dtype=np.float64)
    length = w.shape[1]
    mean = np.add.reduce(w, axis=1, keepdims=True) / length
    dev = w - mean
    np.multiply(dev, dev, out=dev)
    std = np.sqrt(np.add.reduce(dev, axis=1) / length)
    return np.concatenate([mean[:, 0], std], axis=1).tolist()


def _sequential_features(windows: np.ndarray) -> list[list[float]]:
    """[means, stds] of several sensors' windows [batch, W, n], each sum in the window's order:
    laid out [W, batch, n] (a copy: the steps below work in it), each reduction step adds one
    reading of every window and sensor. A window alone is [W, n] as it is, and its two lists
    are joined in Python (numpy's transpose and concatenate cost a window alone 1 µs)."""
    count, length = windows.shape[:2]
    if count == 1:
        w = windows[0].astype(np.float64)
    else:
        w = windows.transpose(1, 0, 2).astype(np.float64, order="C")
    mean = np.add.reduce(w, axis=0)
    mean /= length
    np.subtract(w, mean, out=w)
    np.multiply(w, w, out=w)
    var = np.add.reduce(w, axis=0)
    var /= length
    np.sqrt(var, out=var)
    if count == 1:
        return [mean.tolist() + var.tolist()]
    return np.concatenate([mean, var], axis=1).tolist()
