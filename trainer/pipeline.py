"""The fitted scoring function: window → features → scaling → detector → calibration.

`reference` computes it with numpy and scikit-learn; `to_onnx` writes the same function as one
graph. Contributions are each sensor's share of the detector's per-feature attribution
(`detectors.base.attribution`), summed over that sensor's features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from agent.manifest import INPUT_NAME, OUTPUT_CONTRIBUTIONS, OUTPUT_SCORE
from trainer.calibration import Calibration
from trainer.detectors import Detector, make_detector
from trainer.detectors.base import attribution, onnx_attribution
from trainer.features import onnx_features, reference_features
from trainer.graph import GraphBuilder, float_input

_EPS = 1e-12


@dataclass
class Scaler:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Scaler:
        mean = features.mean(axis=0, dtype=np.float64)
        std = features.std(axis=0, dtype=np.float64)
        std = np.where(std > 1e-9 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, features: np.ndarray) -> np.ndarray:
        return (features.astype(np.float32) - self.mean) / self.std


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
    ) -> tuple[Pipeline, np.ndarray]:
        """The fitted pipeline and its raw scores on the training windows."""
        x = reference_features(windows, features)
        scaler = Scaler.fit(x)
        scaled = scaler.apply(x)
        detector = make_detector(algorithm, members)
        detector.fit(scaled, seed)
        raw = detector.reference_scores(scaled)
        calibration = Calibration.fit(raw, contamination, threshold_factor)
        pipeline = cls(sensors, windows.shape[1], features, scaler, detector, calibration)
        return pipeline, raw

    def reference_scores(self, windows: np.ndarray) -> np.ndarray:
        """Scores [batch] alone by numpy and scikit-learn (no contributions: cheaper)."""
        scaled = self.scaler.apply(reference_features(windows, self.features))
        return self.calibration.apply(self.detector.reference_scores(scaled))

    def reference(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score [batch], contributions [batch, n_sensors]) by numpy and scikit-learn."""
        scaled = self.scaler.apply(reference_features(windows, self.features))
        score = self.calibration.apply(self.detector.reference_scores(scaled))
        per_feature = attribution(self.detector, scaled)
        per_sensor = per_feature.reshape(len(scaled), len(self.features), -1).sum(axis=1)
        shares = per_sensor / (per_sensor.sum(axis=1, keepdims=True) + _EPS)
        return score, shares.astype(np.float32)

    def to_onnx(self) -> onnx.ModelProto:
        g = GraphBuilder()
        n = len(self.sensors)
        feats = onnx_features(g, INPUT_NAME, self.window, self.features)
        scaled = g.op(
            "Div",
            g.op("Sub", feats, g.const(self.scaler.mean, "mu")),
            g.const(self.scaler.std, "sigma"),
        )
        g.rename(self.calibration.onnx(g, self.detector.onnx_scores(g, scaled)), OUTPUT_SCORE)
        per_feature = g.op(
            "Reshape",
            onnx_attribution(self.detector, g, scaled),
            g.const([-1, len(self.features), n], "fs", np.int64),
        )
        per_sensor = g.op("ReduceSum", per_feature, g.const([1], "ax", np.int64), keepdims=0)
        total = g.op(
            "Add",
            g.op("ReduceSum", per_sensor, g.const([1], "ax", np.int64), keepdims=1),
            g.const(_EPS, "eps", np.float64),
        )
        shares = g.op("Div", per_sensor, total)
        g.rename(g.op("Cast", shares, to=TensorProto.FLOAT), OUTPUT_CONTRIBUTIONS)
        return g.model(
            [float_input(INPUT_NAME, ["batch", self.window, n])],
            [float_input(OUTPUT_SCORE, ["batch"]), float_input(OUTPUT_CONTRIBUTIONS, ["batch", n])],
        )
