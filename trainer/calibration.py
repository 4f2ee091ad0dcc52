"""Map raw detector scores to [0, 1] so that the contamination lands on the alert threshold.

score = sigmoid((raw - t) / s), with t = median + factor * (q - median), q the training score
that the configured contamination leaves above it (so factor 1 puts t at q and flags exactly the
contamination's share of training windows; a larger factor leaves room for normal operation to
wander further than the training stretch did), and s chosen so that the training median maps
to 0.1. The threshold maps to
0.5 (`info`, the alert threshold); a raw score past t by half the median-to-t distance maps to
0.75 (`warning`), by the whole distance to 0.9 (`critical`). These are fixed by construction,
so levels mean the same thing for every detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainer.graph import GraphBuilder

_MEDIAN_SCORE = 0.1
_LN = math.log((1 - _MEDIAN_SCORE) / _MEDIAN_SCORE)
ALERT_THRESHOLD = 0.5
LEVELS = {
    "info": ALERT_THRESHOLD,
    "warning": 1 / (1 + math.exp(-0.5 * _LN)),
    "critical": 1 / (1 + math.exp(-_LN)),
}


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class Calibration:
    threshold: float
    scale: float

    @classmethod
    def fit(cls, raw: np.ndarray, contamination: float, factor: float = 1.0) -> Calibration:
        median = float(np.median(raw))
        threshold = median + factor * (float(np.quantile(raw, 1.0 - contamination)) - median)
        spread = threshold - median
        if spread <= 1e-12:
            spread = max(float(raw.std()), 1e-6) * _LN
        return cls(threshold=threshold, scale=spread / _LN)

    def logit(self, raw: np.ndarray) -> np.ndarray:
        """z = (raw - t) / s: the calibrated score is sigmoid(z); z >= 0 at the threshold."""
        return (raw.astype(np.float64) - self.threshold) / self.scale

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(raw))

    def onnx_logit(self, g: GraphBuilder, raw: str) -> str:
        f64 = np.float64
        centered = g.op("Sub", raw, g.const(self.threshold, "cal_threshold", f64))
        return g.op("Div", centered, g.const(self.scale, "cal_scale", f64))

    def onnx(self, g: GraphBuilder, raw: str) -> str:
        return g.op("Sigmoid", self.onnx_logit(g, raw))
