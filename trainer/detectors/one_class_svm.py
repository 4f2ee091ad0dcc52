"""One-class SVM with an RBF kernel: raw score = minus scikit-learn's decision function.

Exported as the kernel against the support vectors in one MatMul (|x|² - 2 x·s + |s|²),
Exp, and the dual-coefficient MatMul, in float64. Fitted on at most `max_train` windows (a
seeded sample): its fit grows with the square of the rows, and the support vectors with them.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from sklearn.svm import OneClassSVM

from trainer.graph import GraphBuilder, squared_distances


class OneClassSVMDetector:
    name = "one_class_svm"

    def __init__(self, nu: float = 0.05, max_train: int = 1500) -> None:
        self.nu = nu
        self.max_train = max_train
        self._model: OneClassSVM | None = None

    def params(self) -> dict[str, float | int | str | bool | None]:
        n_sv = None if self._model is None else len(self._model.support_vectors_)
        return {"nu": self.nu, "kernel": "rbf", "gamma": "scale", "support_vectors": n_sv}

    def fit(self, features: np.ndarray, seed: int) -> None:
        x = features.astype(np.float64)
        if len(x) > self.max_train:
            rows = np.random.default_rng(seed).choice(len(x), self.max_train, replace=False)
            x = x[np.sort(rows)]
        self._model = OneClassSVM(kernel="rbf", gamma="scale", nu=self.nu).fit(x)

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        return -self._fitted().decision_function(features.astype(np.float64))

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        m = self._fitted()
        sv = m.support_vectors_
        f64 = np.float64
        x = g.op("Cast", features, to=TensorProto.DOUBLE)
        dist = squared_distances(g, x, sv, "svm")  # [B, n_sv]
        kernel = g.op("Exp", g.op("Mul", dist, g.const(-m._gamma, "svm_gamma", f64)))
        decision = g.op(
            "Add",
            g.op("MatMul", kernel, g.const(m.dual_coef_.ravel(), "svm_alpha", f64)),
            g.const(float(m.intercept_[0]), "svm_b", f64),
        )
        return g.op("Neg", decision)

    def _fitted(self) -> OneClassSVM:
        if self._model is None:
            raise RuntimeError("fit the detector first")
        return self._model
