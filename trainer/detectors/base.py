"""The one interface every detector implements, so the trainer can treat them alike."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from onnx import TensorProto

from trainer.calibration import Calibration
from trainer.graph import GraphBuilder


class Detector(Protocol):
    """Fit on scaled features; raw scores are higher for more anomalous rows.

    `reference_scores` is the scikit-learn / numpy computation; `onnx_scores` adds nodes that
    compute the same thing inside the exported graph, as float64 [batch] (calibration and the
    score output stay in float64: a cast costs a node, and ONNX Runtime charges per node).
    Export compares the two. A sequence detector (`sequence = True`, the LSTM autoencoder)
    exports from the window itself instead (`onnx_from_window`): the pipeline hands it the
    float64 window, the scaler's mean and std, the calibration and the contributions' floor,
    and it returns the calibrated logit and each sensor's term plus the floor, so that it can
    fold all of them into constants it has anyway (issue 15).
    """

    name: str

    def fit(self, features: np.ndarray, seed: int) -> None: ...

    def reference_scores(self, features: np.ndarray) -> np.ndarray: ...

    def onnx_scores(self, g: GraphBuilder, features: str) -> str: ...

    def params(self) -> dict[str, float | int | str | bool | None]: ...


class AdditiveScore:
    """For detectors whose raw score is a sum over features: they define the per-feature terms
    (`reference_attribution`, `_onnx_attribution`) and get the score as their sum, with the
    terms built once in the graph for both the score and the contributions."""

    def reference_attribution(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _onnx_attribution(self, g: GraphBuilder, features: str) -> str:
        raise NotImplementedError

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        return self.reference_attribution(features).sum(axis=1)

    def onnx_attribution(self, g: GraphBuilder, features: str) -> str:
        return g.once(f"attribution_{id(self)}", lambda: self._onnx_attribution(g, features))

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        terms = self.onnx_attribution(g, features)
        return g.op("ReduceSum", terms, g.const([1], "ax", np.int64), keepdims=0)


def onnx_logit(detector: Detector, g: GraphBuilder, features: str, cal: Calibration) -> str:
    """The calibrated logit (raw - t) / s as nodes: the detector's own `onnx_logit` where it
    folds t and s into constants it has anyway (ONNX Runtime charges about 0.3 µs a node,
    whatever it does; issue 15), else the calibration's two nodes after its raw score."""
    own = getattr(detector, "onnx_logit", None)
    if own is not None:
        return own(g, features, cal)
    return cal.onnx_logit(g, detector.onnx_scores(g, features))


def needs_float32(detector: Detector) -> bool:
    """Whether the detector must see features rounded to float32 (trees: see `features`)."""
    return bool(getattr(detector, "float32_features", False))


def is_sequence(detector: Detector) -> bool:
    """Whether the detector reads the window as a sequence rather than window features."""
    return bool(getattr(detector, "sequence", False))


def attribution(detector: Detector, features: np.ndarray) -> np.ndarray:
    """[batch, n_features] >= 0: what each feature adds to the window's raw score.

    A detector whose score is a sum over features says so in its own terms
    (`reference_attribution`: PCA's T² and Q per feature, the autoencoder's reconstruction
    error per feature); for the others (trees, kernels, densities, neighbours) the squared
    standardized feature: how far that feature sits from its training distribution.
    """
    own = getattr(detector, "reference_attribution", None)
    if own is not None:
        return own(features)
    x = features.astype(np.float64)
    return x * x


def onnx_attribution(detector: Detector, g: GraphBuilder, features: str) -> str:
    """`attribution` as graph nodes: float64 [batch, n_features]."""
    own = getattr(detector, "onnx_attribution", None)
    if own is not None:
        return own(g, features)
    x = g.op("Cast", features, to=TensorProto.DOUBLE)
    return g.op("Mul", x, x)
