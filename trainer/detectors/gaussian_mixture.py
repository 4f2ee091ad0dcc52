"""Gaussian mixture: raw score = negative log-likelihood of the window's features.

Exported as one MatMul against every component's precision Cholesky factor at once, a sum of
squares per component and a log-sum-exp, in float64 like the reference (scikit-learn's own
`score_samples`).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto
from sklearn.mixture import GaussianMixture

from trainer.calibration import Calibration
from trainer.graph import GraphBuilder


class GaussianMixtureDetector:
    name = "gaussian_mixture"

    def __init__(self, n_components: int = 3) -> None:
        self.n_components = n_components
        self._model: GaussianMixture | None = None

    def params(self) -> dict[str, float | int | str | bool | None]:
        return {"n_components": self.n_components, "covariance": "full"}

    def fit(self, features: np.ndarray, seed: int) -> None:
        self._model = GaussianMixture(
            n_components=self.n_components, covariance_type="full", reg_covar=1e-4,
            random_state=seed,
        ).fit(features.astype(np.float64))  # fmt: skip

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        return -self._fitted().score_samples(features.astype(np.float64))

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        return g.op("Neg", self._onnx_log_likelihood(g, features))

    def onnx_logit(self, g: GraphBuilder, features: str, cal: Calibration) -> str:
        """(-log p - t) / s as (log p + t) / -s: no negation node."""
        f64 = np.float64
        shifted = g.op(
            "Add", self._onnx_log_likelihood(g, features), g.const(cal.threshold, "cal_t", f64)
        )
        return g.op("Div", shifted, g.const(-cal.scale, "cal_minus_s", f64))

    def _onnx_log_likelihood(self, g: GraphBuilder, features: str) -> str:
        m = self._fitted()
        k, d = m.means_.shape
        chol = m.precisions_cholesky_  # [k, d, d]
        weights = np.concatenate(list(chol), axis=1)  # [d, k*d]
        offsets = np.concatenate([m.means_[i] @ chol[i] for i in range(k)])
        log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        constants = -0.5 * d * math.log(2 * math.pi) + log_det + np.log(m.weights_)
        f64 = np.float64
        x = g.op("Cast", features, to=TensorProto.DOUBLE)
        y = g.op(
            "Sub", g.op("MatMul", x, g.const(weights, "gmm_w", f64)), g.const(offsets, "gmm_b", f64)
        )
        per_component = g.op(
            "ReduceSum",
            g.op("Reshape", g.op("Mul", y, y), g.const([-1, k, d], "gmm_shape", np.int64)),
            g.const([2], "ax2", np.int64),
            keepdims=0,
        )
        log_prob = g.op(
            "Add",
            g.op("Mul", per_component, g.const(-0.5, "half", f64)),
            g.const(constants, "gmm_c", f64),
        )
        return g.op("ReduceLogSumExp", log_prob, axes=[1], keepdims=0)

    def _fitted(self) -> GaussianMixture:
        if self._model is None:
            raise RuntimeError("fit the detector first")
        return self._model
