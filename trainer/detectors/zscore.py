"""Drift-aware z-score: the mean squared distance of the window's features from their training
values, each measured against how far that feature wandered while training.

Plant data drifts: a pump's temperature creeps for an hour in perfectly normal operation, and a
detector fitted on a short normal stretch then flags everything that follows (on SKAB, PCA's
T² + Q flags 71 % of the normal rows after the first 400). So each feature's scale is
sqrt(var + (1.5 R)²), with R the range of its means over 8 consecutive blocks of the training
windows: a feature whose level already moved while training gets a wider scale, a noisy but
steady one keeps its standard deviation. It is decided from the data, not from sensor names.
Features are not re-whitened (PCA, a Mahalanobis distance or a mixture would undo that scale).

raw = mean over features of z², z = (x − μ) / scale; each feature's z² / n is its contribution,
so the contributions add up to the raw score. The threshold sits 3 × (q(1 − contamination) −
median) past the training median, since the training stretch is short and later normal
operation wanders further than it did (`threshold_factor`). Window 20 with mean, std, min and
max: levels and spread over the window, no single-reading features, which are noise here.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from trainer.detectors.base import AdditiveScore
from trainer.graph import GraphBuilder


class ZScoreDetector(AdditiveScore):
    name = "zscore"
    # The settings it is built for; every one can be overridden (--window, --features, ...).
    default_window = 20
    default_features = ("mean", "std", "min", "max")
    threshold_factor = 3.0

    def __init__(self, drift_blocks: int = 8, drift_weight: float = 1.5) -> None:
        self.drift_blocks = drift_blocks
        self.drift_weight = drift_weight
        self._fit: tuple[np.ndarray, np.ndarray] | None = None

    def params(self) -> dict[str, float | int | str | bool | None]:
        return {"drift_blocks": self.drift_blocks, "drift_weight": self.drift_weight}

    def fit(self, features: np.ndarray, seed: int) -> None:
        """`features` in time order (the training windows as they came)."""
        x = features.astype(np.float64)
        blocks = np.array_split(x, min(self.drift_blocks, len(x)))
        means = np.stack([b.mean(axis=0) for b in blocks])
        wander = means.max(axis=0) - means.min(axis=0)
        scale = np.sqrt(x.var(axis=0) + (self.drift_weight * wander) ** 2)
        self._fit = (x.mean(axis=0), np.where(scale > 1e-9, scale, 1.0))

    def reference_attribution(self, features: np.ndarray) -> np.ndarray:
        mean, scale = self._fitted()
        z = (features.astype(np.float64) - mean) / scale
        return z * z / z.shape[1]

    def _onnx_attribution(self, g: GraphBuilder, features: str) -> str:
        mean, scale = self._fitted()
        f64 = np.float64
        x = g.op("Cast", features, to=TensorProto.DOUBLE)
        # z / √n squared is z² / n: the 1 / n folded into the scale saves a node.
        root_n_scale = scale * np.sqrt(len(mean))
        z = g.op(
            "Div",
            g.op("Sub", x, g.const(mean, "z_mean", f64)),
            g.const(root_n_scale, "z_scale", f64),
        )
        return g.op("Mul", z, z)

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self._fit is None:
            raise RuntimeError("fit the detector first")
        return self._fit
