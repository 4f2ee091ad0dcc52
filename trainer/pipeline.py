"""The fitted scoring function: window → features → scaling → detector → calibration.

`reference` computes it with numpy and scikit-learn; `to_onnx` writes the same function as one
graph. Contributions are each sensor's share of the detector's per-feature attribution
(`detectors.base.attribution`), summed over that sensor's features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from agent.model.manifest import INPUT_NAME, OUTPUT_CONTRIBUTIONS, OUTPUT_SCORE
from trainer.calibration import Calibration
from trainer.detectors import Detector, Param, make_detector
from trainer.detectors.base import attribution, is_sequence, needs_float32, onnx_attribution
from trainer.features import SEQUENCE, onnx_features, reference_features
from trainer.graph import GraphBuilder, float_input


@dataclass
class Scaler:
    """Standardizes the features. `exact`: in float64 throughout, for detectors that compute
    in float64 anyway; otherwise rounded once to float32, so that a tree's split sees the same
    value from the graph as from the reference (an ulp can flip a split)."""

    mean: np.ndarray
    std: np.ndarray
    exact: bool

    @classmethod
    def fit(cls, features: np.ndarray, exact: bool) -> Scaler:
        # Per column; a sequence [batch, window, sensors] per sensor over every position.
        axes = tuple(range(features.ndim - 1))
        mean = features.mean(axis=axes, dtype=np.float64)
        std = features.std(axis=axes, dtype=np.float64)
        std = np.where(std > 1e-9 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        if exact:
            return cls(mean, std, exact)
        return cls(mean.astype(np.float32), std.astype(np.float32), exact)

    @property
    def dtype(self) -> type:
        return np.float64 if self.exact else np.float32

    def apply(self, features: np.ndarray) -> np.ndarray:
        return (features.astype(self.dtype) - self.mean) / self.std


@dataclass
class Pipeline:
    sensors: list[str]
    window: int
    features: list[str]
    scaler: Scaler
    detector: Detector
    calibration: Calibration

    @classmethod
    def fit(
        cls,
        windows: np.ndarray,
        sensors: list[str],
        features: list[str],
        algorithm: str,
        contamination: float,
        seed: int,
        members: list[str] | None = None,
        threshold_factor: float = 1.0,
        params: Mapping[str, Param] | None = None,
    ) -> tuple[Pipeline, np.ndarray]:
        """The fitted pipeline and its raw scores on the training windows."""
        detector = make_detector(algorithm, members, params)
        if is_sequence(detector) != (features == [SEQUENCE]):
            raise ValueError(
                f"{algorithm} reads the window as a sequence: its features are [{SEQUENCE!r}]"
                if is_sequence(detector)
                else f"{algorithm} reads window features, not the {SEQUENCE!r} of a sequence model"
            )
        exact = not needs_float32(detector)
        x = reference_features(windows, features, exact)
        scaler = Scaler.fit(x, exact)
        scaled = scaler.apply(x)
        detector.fit(scaled, seed)
        raw = detector.reference_scores(scaled)
        calibration = Calibration.fit(raw, contamination, threshold_factor)
        pipeline = cls(sensors, windows.shape[1], features, scaler, detector, calibration)
        return pipeline, raw

    def scaled(self, windows: np.ndarray) -> np.ndarray:
        """The detector's input: the windows' features, standardized."""
        return self.scaler.apply(reference_features(windows, self.features, self.scaler.exact))

    def reference_scores(self, windows: np.ndarray) -> np.ndarray:
        """Scores [batch] alone by numpy and scikit-learn (no contributions: cheaper)."""
        return self.calibration.apply(self.detector.reference_scores(self.scaled(windows)))

    def reference(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score [batch], contributions [batch, n_sensors]) by numpy and scikit-learn."""
        scaled = self.scaled(windows)
        score = self.calibration.apply(self.detector.reference_scores(scaled))
        per_sensor = attribution(self.detector, scaled) @ self._per_sensor()
        total = per_sensor.sum(axis=1, keepdims=True)
        shares = np.divide(per_sensor, total, out=np.zeros_like(per_sensor), where=total > 0)
        return score, shares

    def _per_sensor(self) -> np.ndarray:
        """[features * sensors, sensors]: adds up each sensor's features (feature f of sensor s
        sits at column f * n + s), so the graph does it in one MatMul."""
        n = len(self.sensors)
        return np.tile(np.eye(n), (len(self.features), 1))

    def to_onnx(self) -> onnx.ModelProto:
        g = GraphBuilder()
        n = len(self.sensors)
        feats = onnx_features(g, INPUT_NAME, self.window, self.features, self.scaler.exact)
        # Standardized as [batch, features, sensors], then flattened to the reference's columns.
        dtype, grid = self.scaler.dtype, (len(self.features), n)
        standardized = g.op(
            "Div",
            g.op("Sub", feats, g.const(self.scaler.mean.reshape(grid), "mu", dtype)),
            g.const(self.scaler.std.reshape(grid), "sigma", dtype),
        )
        sequence = self.features == [SEQUENCE]
        scaled = standardized if sequence else g.op("Flatten", standardized, axis=1)
        calibrated = self.calibration.onnx(g, self.detector.onnx_scores(g, scaled))
        # float32 out: a saturated score reads 1.0, not 0.99999999997, in alerts and CSVs.
        g.rename(g.op("Cast", calibrated, to=TensorProto.FLOAT), OUTPUT_SCORE)
        per_sensor = g.op(
            "MatMul",
            onnx_attribution(self.detector, g, scaled),
            g.const(self._per_sensor(), "per_sensor", np.float64),
        )
        # L1 over non-negative shares: each row divided by its sum (a zero row stays zero).
        shares = g.op("LpNormalization", per_sensor, axis=1, p=1)
        g.rename(shares, OUTPUT_CONTRIBUTIONS)  # float64, as computed: a cast would cost a node
        return g.model(
            [float_input(INPUT_NAME, ["batch", self.window, n])],
            [
                float_input(OUTPUT_SCORE, ["batch"]),
                float_input(OUTPUT_CONTRIBUTIONS, ["batch", n], TensorProto.DOUBLE),
            ],
        )
