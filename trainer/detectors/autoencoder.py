"""Autoencoder: a scikit-learn MLP trained to reproduce normal windows' features through a
narrow hidden layer; raw score = squared reconstruction error, the sum over features of each
feature's squared error (which is also what its contributions show). Exported as its two dense
layers (MatMul, Add, ReLU) in float64.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from onnx import TensorProto
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from trainer.detectors.base import AdditiveScore
from trainer.graph import GraphBuilder

log = logging.getLogger(__name__)


class AutoencoderDetector(AdditiveScore):
    name = "autoencoder"

    def __init__(self, bottleneck: float = 0.3, max_iter: int = 400) -> None:
        self.bottleneck = bottleneck  # hidden units as a share of the features
        self.max_iter = max_iter
        self._model: MLPRegressor | None = None
        self._converged: bool | None = None

    def params(self) -> dict[str, float | int | str | bool | None]:
        hidden = None if self._model is None else int(self._model.hidden_layer_sizes[0])
        return {
            "hidden": hidden,
            "activation": "relu",
            "max_iter": self.max_iter,
            "converged": self._converged,
        }

    def fit(self, features: np.ndarray, seed: int) -> None:
        x = features.astype(np.float64)
        hidden = max(2, round(x.shape[1] * self.bottleneck))
        model = MLPRegressor(
            hidden_layer_sizes=(hidden,), activation="relu", alpha=1e-4, max_iter=self.max_iter,
            random_state=seed,
        )  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            # One feature: scikit-learn wants that target 1-D (it warns on a column otherwise).
            model.fit(x, x[:, 0] if x.shape[1] == 1 else x)
        self._converged = True
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                self._converged = False
            else:  # recorded only to find the one above: anything else is passed on
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not self._converged:
            # Info, not a warning: the model at max_iter is still calibrated and checked like
            # any other, and a benchmark fitting it on dozens of files printed one warning per
            # file above its table (issue 17, item 8). The manifest keeps `converged`.
            log.info("autoencoder stopped at max_iter=%d before converging", self.max_iter)
        self._model = model

    def reference_attribution(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float64)
        # scikit-learn returns one output as a 1-D array: keep it [rows, features].
        return (x - self._fitted().predict(x).reshape(x.shape)) ** 2

    def _onnx_attribution(self, g: GraphBuilder, features: str) -> str:
        m = self._fitted()
        (w1, w2), (b1, b2) = m.coefs_, m.intercepts_
        x = g.op("Cast", features, to=TensorProto.DOUBLE)
        hidden = g.op("Relu", _dense(g, x, w1, b1, "ae_1"))
        err = g.op("Sub", x, _dense(g, hidden, w2, b2, "ae_2"))
        return g.op("Mul", err, err)

    def _fitted(self) -> MLPRegressor:
        if self._model is None:
            raise RuntimeError("fit the detector first")
        return self._model


def _dense(g: GraphBuilder, x: str, w: np.ndarray, b: np.ndarray, hint: str) -> str:
    f64 = np.float64
    return g.op(
        "Add", g.op("MatMul", x, g.const(w, f"{hint}_w", f64)), g.const(b, f"{hint}_b", f64)
    )
