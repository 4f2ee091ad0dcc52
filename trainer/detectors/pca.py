"""PCA with Hotelling's T² and Q (squared prediction error), the classic process-monitoring pair.

T² measures how far a window sits inside the normal subspace; Q how far it leaves it, which is
what a single faulty sensor in a correlated set does. raw = T²/E[T²] + Q/E[Q] on training data.
Computed in float64 in both the reference and the graph.

Both split exactly over the features, which is what the contributions show: Q is the sum of
the squared residuals, and T² = |x S|² with S = P Λ^-1/2 Pᵀ, the symmetric square root of the
model's precision (the "complete decomposition" contributions of process monitoring), so each
feature's share is (x S)_j² / E[T²] + r_j² / E[Q] and the shares add up to the raw score.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from trainer.detectors.base import AdditiveScore
from trainer.graph import GraphBuilder


class PCADetector(AdditiveScore):
    name = "pca"

    def __init__(self, variance: float = 0.9) -> None:
        self.variance = variance
        self._fit: tuple[np.ndarray, np.ndarray, np.ndarray, float, float] | None = None

    def params(self) -> dict[str, float | int | str | bool | None]:
        fitted = self._fit
        return {
            "variance": self.variance,
            "components": None if fitted is None else fitted[1].shape[1],
        }

    def fit(self, features: np.ndarray, seed: int) -> None:
        x = features.astype(np.float64)
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        eig = s**2 / max(len(x) - 1, 1)
        total = eig.sum()  # 0 for features that never moved (a constant series)
        share = np.cumsum(eig) / total if total > 0 else np.ones_like(eig)
        # At least one component; at most all but one, so Q has a residual to measure (with a
        # single feature there is none: Q is 0 and T² does the work).
        k = int(max(1, min(np.searchsorted(share, self.variance) + 1, len(eig) - 1)))
        components, kept = vt[:k].T, np.maximum(eig[:k], 1e-12)
        t2_scale = float(k)
        q_scale = max(float(eig[k:].sum()), 1e-12)
        self._fit = (mean, components, kept, t2_scale, q_scale)

    def reference_attribution(self, features: np.ndarray) -> np.ndarray:
        mean, project, add_halves = self._matrices()
        both = (features.astype(np.float64) - mean) @ project
        return (both * both) @ add_halves

    def _onnx_attribution(self, g: GraphBuilder, features: str) -> str:
        mean, project, add_halves = self._matrices()
        f64 = np.float64
        centered = g.op(
            "Sub", g.op("Cast", features, to=TensorProto.DOUBLE), g.const(mean, "pca_mean", f64)
        )
        both = g.op("MatMul", centered, g.const(project, "pca_project", f64))
        return g.op("MatMul", g.op("Mul", both, both), g.const(add_halves, "pca_add", f64))

    def _matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One projection gives both halves at once, [x S / sqrt(E[T²]) | r / sqrt(E[Q])] with
        r = x (I - P Pᵀ), so squaring and adding the halves gives each feature's share of the
        raw score in three graph nodes instead of ten."""
        mean, components, eig, t2_scale, q_scale = self._fitted()
        n = len(mean)
        root_precision = (components / np.sqrt(eig)) @ components.T
        residual = np.eye(n) - components @ components.T
        project = np.hstack([root_precision / np.sqrt(t2_scale), residual / np.sqrt(q_scale)])
        return mean, project, np.vstack([np.eye(n), np.eye(n)])

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        if self._fit is None:
            raise RuntimeError("fit the detector first")
        return self._fit
