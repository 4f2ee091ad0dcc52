"""Map raw detector scores to [0, 1] so that the contamination lands on the alert threshold.

score = squash((raw - t) / s), with t = median + factor * (q - median), q the training score
that the configured contamination leaves above it (so factor 1 puts t at q and flags exactly the
contamination's share of training windows; a larger factor leaves room for normal operation to
wander further than the training stretch did), and s chosen so that the training median maps
to 0.1. The threshold maps to
0.5 (`info`, the alert threshold); a raw score past t by half the median-to-t distance maps to
0.75 (`warning`), by the whole distance to 0.9 (`critical`). These are fixed by construction,
so levels mean the same thing for every detector.

`squash` is the logistic sigmoid up to 0.9 and a hyperbola beyond it (issue 15): a sigmoid
reaches 1.0 in float64 at z ≈ 37 and in float32 at z ≈ 17, so windows far past the threshold
tied at 1.000000 and no threshold could rank them. The hyperbola 1 − 1 / (10 + 9 (z − ln 9))
meets the sigmoid at 0.9 with the same slope (0.09) and keeps distinct raw scores distinct in
float64 up to z of about 1e14.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agent.model.squash import TAIL_OFFSET, TAIL_SLOPE
from trainer.graph import GraphBuilder

_MEDIAN_SCORE = 0.1
_LN = math.log((1 - _MEDIAN_SCORE) / _MEDIAN_SCORE)
# The logit of the `critical` level (0.9): ln 9, also the guard's unit (`pipeline.StuckGuard`).
CRITICAL_LOGIT = _LN
ALERT_THRESHOLD = 0.5
LEVELS = {
    "info": ALERT_THRESHOLD,
    "warning": 1 / (1 + math.exp(-0.5 * _LN)),
    "critical": 1 / (1 + math.exp(-_LN)),
}
# The smallest median-to-threshold distance, relative to the raw scores' magnitude (at least 1):
# training windows that all score alike (a constant series) would otherwise put the threshold
# on the median and map every normal window to 0.5, or turn rounding noise into whole scores.
# A thousandth is far above float rounding (float32 trees: ~1e-7) and far below what leaving a
# constant reading adds (a standardized feature of at least 1).
SPREAD_FLOOR = 1e-3
# The hyperbolic tail, 1 - 1 / max(_TAIL_SLOPE z + _TAIL_OFFSET, 10): equal to 0.9 at z = ln 9.
# Its constants are the agent's (agent.model.squash), whose stream layer inverts the score.
_TAIL_SLOPE = TAIL_SLOPE
_TAIL_OFFSET = TAIL_OFFSET


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def squash(z: np.ndarray) -> np.ndarray:
    """The calibrated score of logit z: the sigmoid, and past 0.9 the hyperbolic tail (the
    tail is below the sigmoid there and above 0.9 nowhere before it, so their min is exact)."""
    z = np.asarray(z, dtype=np.float64)
    tail = 1.0 - 1.0 / np.maximum(_TAIL_SLOPE * z + _TAIL_OFFSET, 10.0)
    return np.minimum(sigmoid(z), tail)


def onnx_squash(g: GraphBuilder, z: str) -> str:
    """`squash` as nodes, float64 in and out, in six nodes where min(sigmoid, tail) takes seven
    (ONNX Runtime charges about 0.3 µs per node; issue 15's budget is 20 µs per window):
    sigmoid(min(z, ln(max(L − 1, 9)))) with L = 9 z + offset the hyperbola's line, since
    sigmoid(ln(L − 1)) = 1 − 1 / L. Up to z = ln 9 the min is z itself, so every score up to
    0.9 (the alert threshold and the levels among them) is the sigmoid bit for bit; beyond it
    ln(L − 1) < z, and the score is the hyperbola with one bit less (the sigmoid's 1 + e⁻ʸ
    rounds at twice the spacing of floats just below 1)."""
    f64 = np.float64
    line = g.op(
        "Add",
        g.op("Mul", z, g.const(_TAIL_SLOPE, "tail_slope", f64)),
        g.const(_TAIL_OFFSET - 1.0, "tail_offset", f64),
    )
    knee = g.op("Log", g.op("Max", line, g.const(9.0, "tail_floor", f64)))
    return g.op("Sigmoid", g.op("Min", z, knee))


@dataclass(frozen=True)
class Calibration:
    threshold: float
    scale: float

    @classmethod
    def fit(cls, raw: np.ndarray, contamination: float, factor: float = 1.0) -> Calibration:
        median = float(np.median(raw))
        spread = factor * (float(np.quantile(raw, 1.0 - contamination)) - median)
        spread = max(spread, SPREAD_FLOOR * max(1.0, abs(median)))
        return cls(threshold=median + spread, scale=spread / _LN)

    def logit(self, raw: np.ndarray) -> np.ndarray:
        """z = (raw - t) / s: the calibrated score is squash(z); z >= 0 at the threshold."""
        return (raw.astype(np.float64) - self.threshold) / self.scale

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return squash(self.logit(raw))

    def onnx_logit(self, g: GraphBuilder, raw: str) -> str:
        f64 = np.float64
        centered = g.op("Sub", raw, g.const(self.threshold, "cal_threshold", f64))
        return g.op("Div", centered, g.const(self.scale, "cal_scale", f64))

    def onnx(self, g: GraphBuilder, raw: str) -> str:
        return onnx_squash(g, self.onnx_logit(g, raw))
