"""The one interface every detector implements, so the trainer can treat them alike."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from trainer.graph import GraphBuilder


class Detector(Protocol):
    """Fit on scaled features; raw scores are higher for more anomalous rows.

    `reference_scores` is the scikit-learn / numpy computation; `onnx_scores` adds nodes that
    compute the same thing inside the exported graph. Export compares the two.
    """

    name: str

    def fit(self, features: np.ndarray, seed: int) -> None: ...

    def reference_scores(self, features: np.ndarray) -> np.ndarray: ...

    def onnx_scores(self, g: GraphBuilder, features: str) -> str: ...

    def params(self) -> dict[str, float | int | str | bool | None]: ...
