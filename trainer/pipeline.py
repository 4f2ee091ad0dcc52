"""The fitted scoring function: window → features → scaling → detector → calibration.

`reference` computes it with numpy and scikit-learn; `to_onnx` writes the same function as one
graph. Contributions are each sensor's share of the detector's per-feature attribution
(`detectors.base.attribution`), summed over that sensor's features.

A feature that did not move while training (a valve stuck at one position, the rate of change of
a constant reading) is scaled by the float32 resolution of its sensor's readings rather than by
its standard deviation of 0, so leaving that value is many standard units away for every
detector; and since a tree never splits on a constant feature, the `StuckGuard` turns such a
departure into a score of its own, whatever the detector saw (issue 15).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from agent.model.manifest import INPUT_NAME, OUTPUT_CONTRIBUTIONS, OUTPUT_SCORE
from trainer.calibration import CRITICAL_LOGIT, Calibration, onnx_squash, squash
from trainer.detectors import Detector, Param, make_detector
from trainer.detectors.base import (
    attribution,
    is_sequence,
    needs_float32,
    onnx_attribution,
    onnx_logit,
)
from trainer.features import SEQUENCE, onnx_features, reference_features
from trainer.graph import GraphBuilder, float_input

# A feature's scale is at least this many float32 epsilons of its sensor's largest reading:
# readings travel as float32, so a change smaller than a few of their ulps is rounding, and
# anything larger is a real move of the sensor.
RESOLUTION_ULPS = 16
# Below this magnitude a sensor's resolution stops shrinking (a sensor stuck at exactly 0):
# keeps a departure's standardized size finite in float32 for any float32 reading.
_SMALLEST_MAGNITUDE = 1e-6
# Standardized float32 features are clipped to ±this: a reading near float32's largest over a
# stuck sensor's tiny scale would overflow to inf, and inf² / inf in the contributions is NaN.
# Far beyond any real standardized value; its square is finite in float64.
FLOAT32_BOUND = 1e30
# Added to every sensor's attribution: below it an attribution is rounding (attributions are in
# squared standard units, about 1 for a typical window), so a window whose features sit exactly
# on their training means (a constant series) shares evenly instead of by rounding noise, which
# differs between numpy and the graph (a share of 0 against 1).
ATTRIBUTION_FLOOR = 1e-12


def feature_resolution(windows: np.ndarray, n_features: int) -> np.ndarray:
    """[n_features * n_sensors]: the smallest meaningful change of each feature column, from
    the float32 resolution of its sensor's readings (feature f of sensor s at f * n + s)."""
    magnitude = np.abs(windows.astype(np.float64)).max(axis=(0, 1))
    per_sensor = RESOLUTION_ULPS * float(np.finfo(np.float32).eps)
    per_sensor = per_sensor * np.maximum(magnitude, _SMALLEST_MAGNITUDE)
    return np.tile(per_sensor, n_features)


@dataclass
class Scaler:
    """Standardizes the features. `exact`: in float64 throughout, for detectors that compute
    in float64 anyway; otherwise rounded once to float32, so that a tree's split sees the same
    value from the graph as from the reference (an ulp can flip a split). No scale is below the
    feature's resolution (`feature_resolution`): a constant feature is measured in it."""

    mean: np.ndarray
    std: np.ndarray
    exact: bool

    @classmethod
    def fit(cls, features: np.ndarray, exact: bool, resolution: np.ndarray) -> Scaler:
        # Per column; a sequence [batch, window, sensors] per sensor over every position.
        axes = tuple(range(features.ndim - 1))
        mean = features.mean(axis=axes, dtype=np.float64)
        std = np.maximum(features.std(axis=axes, dtype=np.float64), resolution)
        if exact:
            return cls(mean, std, exact)
        return cls(mean.astype(np.float32), std.astype(np.float32), exact)

    @property
    def dtype(self) -> type:
        return np.float64 if self.exact else np.float32

    def apply(self, features: np.ndarray) -> np.ndarray:
        scaled = (features.astype(self.dtype) - self.mean) / self.std
        return scaled if self.exact else np.clip(scaled, -FLOAT32_BOUND, FLOAT32_BOUND)


@dataclass
class StuckGuard:
    """Scores leaving a value that did not move while training, in the calibration's logit
    domain: z = ln 9 · (e − 1), e = max over the stuck columns of |x| − r (x standardized, r the
    largest |x| seen while training), so a window within its training range scores at most 0.1,
    one resolution unit past it 0.5 (the alert threshold), two units 0.9. The window's logit is
    the larger of the detector's and the guard's. Its attribution is at least e² per stuck
    column, so the sensor that moved is named even by a detector blind to it (a tree)."""

    columns: np.ndarray  # int64 indices of the feature columns that did not move
    reach: np.ndarray  # float64: the largest |standardized value| of each while training
    n_features: int  # all feature columns, stuck or not

    @classmethod
    def fit(cls, features: np.ndarray, scaled: np.ndarray, resolution: np.ndarray) -> StuckGuard:
        if features.ndim != 2:  # a sequence model reads every reading itself: no guard
            return cls(np.empty(0, np.int64), np.empty(0), features.shape[-1])
        stuck = features.std(axis=0, dtype=np.float64) <= resolution
        columns = np.flatnonzero(stuck).astype(np.int64)
        reach = np.abs(scaled[:, columns].astype(np.float64)).max(axis=0, initial=0.0)
        return cls(columns, reach, features.shape[1])

    def _excess(self, scaled: np.ndarray) -> np.ndarray:
        return np.abs(scaled[:, self.columns].astype(np.float64)) - self.reach

    def logit(self, scaled: np.ndarray) -> np.ndarray | None:
        if not len(self.columns):
            return None
        return CRITICAL_LOGIT * (self._excess(scaled).max(axis=1) - 1.0)

    def attribution(self, scaled: np.ndarray, detector_terms: np.ndarray) -> np.ndarray:
        if not len(self.columns):
            return detector_terms
        excess = np.maximum(self._excess(scaled), 0.0)
        return np.maximum(detector_terms, (excess * excess) @ self._spread())

    def _spread(self) -> np.ndarray:
        """[stuck, n_features]: puts each stuck column back in its place (one MatMul)."""
        out = np.zeros((len(self.columns), self.n_features))
        out[np.arange(len(self.columns)), self.columns] = 1.0
        return out

    def _onnx_excess(self, g: GraphBuilder, scaled: str) -> str:
        def build() -> str:
            cols = g.const(self.columns, "stuck_cols", np.int64)
            picked = g.op("Cast", g.op("Gather", scaled, cols, axis=1), to=TensorProto.DOUBLE)
            return g.op("Sub", g.op("Abs", picked), g.const(self.reach, "stuck_reach", np.float64))

        return g.once(f"stuck_excess_{id(self)}", build)

    def onnx_logit(self, g: GraphBuilder, scaled: str) -> str | None:
        if not len(self.columns):
            return None
        f64 = np.float64
        worst = g.op("ReduceMax", self._onnx_excess(g, scaled), axes=[1], keepdims=0)
        away = g.op("Sub", worst, g.const(1.0, "stuck_one", f64))
        return g.op("Mul", away, g.const(CRITICAL_LOGIT, "stuck_ln", f64))

    def onnx_attribution(self, g: GraphBuilder, scaled: str, detector_terms: str) -> str:
        if not len(self.columns):
            return detector_terms
        excess = g.op("Relu", self._onnx_excess(g, scaled))
        placed = g.op(
            "MatMul",
            g.op("Mul", excess, excess),
            g.const(self._spread(), "stuck_spread", np.float64),
        )
        return g.op("Max", detector_terms, placed)


@dataclass
class Pipeline:
    sensors: list[str]
    window: int
    features: list[str]
    scaler: Scaler
    detector: Detector
    calibration: Calibration
    guard: StuckGuard

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
        resolution = feature_resolution(windows, len(features))
        scaler = Scaler.fit(x, exact, resolution)
        scaled = scaler.apply(x)
        detector.fit(scaled, seed)
        raw = detector.reference_scores(scaled)
        calibration = Calibration.fit(raw, contamination, threshold_factor)
        guard = StuckGuard.fit(x, scaled, resolution)
        pipeline = cls(sensors, windows.shape[1], features, scaler, detector, calibration, guard)
        return pipeline, raw

    def scaled(self, windows: np.ndarray) -> np.ndarray:
        """The detector's input: the windows' features, standardized."""
        return self.scaler.apply(reference_features(windows, self.features, self.scaler.exact))

    def reference_scores(self, windows: np.ndarray) -> np.ndarray:
        """Scores [batch] alone by numpy and scikit-learn (no contributions: cheaper)."""
        return squash(self.reference_logit(self.scaled(windows)))

    def reference_logit(self, scaled: np.ndarray) -> np.ndarray:
        """The calibrated logit [batch] of standardized features: the detector's, or the
        guard's where a stuck feature left its value further."""
        z = self.calibration.logit(self.detector.reference_scores(scaled))
        guard = self.guard.logit(scaled)
        return z if guard is None else np.maximum(z, guard)

    def reference(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score [batch], contributions [batch, n_sensors]) by numpy and scikit-learn."""
        scaled = self.scaled(windows)
        score = squash(self.reference_logit(scaled))
        terms = self.guard.attribution(scaled, attribution(self.detector, scaled))
        per_sensor = terms @ self._per_sensor() + ATTRIBUTION_FLOOR
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
        # float64 out: float32 has no room near 1 to keep far-out windows in order (issue 15).
        if is_sequence(self.detector):  # no stuck guard; see detectors.base.Detector
            z, per_sensor = self.detector.onnx_from_window(
                g, feats, self.scaler.mean, self.scaler.std, self.calibration, ATTRIBUTION_FLOOR
            )
            g.rename(onnx_squash(g, z), OUTPUT_SCORE)
        else:
            scaled = self._onnx_scaled(g, feats, n)
            g.rename(onnx_squash(g, self._onnx_logit(g, scaled)), OUTPUT_SCORE)
            per_sensor = self._onnx_per_sensor(g, scaled, n)
        # L1 over positive shares: each row divided by its sum.
        shares = g.op("LpNormalization", per_sensor, axis=1, p=1)
        g.rename(shares, OUTPUT_CONTRIBUTIONS)  # float64, as computed: a cast would cost a node
        return g.model(
            [float_input(INPUT_NAME, ["batch", self.window, n])],
            [
                float_input(OUTPUT_SCORE, ["batch"], TensorProto.DOUBLE),
                float_input(OUTPUT_CONTRIBUTIONS, ["batch", n], TensorProto.DOUBLE),
            ],
        )

    def _onnx_scaled(self, g: GraphBuilder, feats: str, n: int) -> str:
        """The detector's input: the window features, standardized."""
        # Standardized as [batch, features, sensors], then flattened to the reference's columns.
        dtype, grid = self.scaler.dtype, (len(self.features), n)
        standardized = g.op(
            "Div",
            g.op("Sub", feats, g.const(self.scaler.mean.reshape(grid), "mu", dtype)),
            g.const(self.scaler.std.reshape(grid), "sigma", dtype),
        )
        if not self.scaler.exact:  # float32: a huge reading over a tiny scale would be inf
            bound = FLOAT32_BOUND
            standardized = g.op(
                "Clip",
                standardized,
                g.const(-bound, "clip_lo", np.float32),
                g.const(bound, "clip_hi", np.float32),
            )
        return g.op("Flatten", standardized, axis=1)

    def _onnx_logit(self, g: GraphBuilder, scaled: str) -> str:
        """The detector's calibrated logit, or the guard's where it is larger."""
        z = onnx_logit(self.detector, g, scaled, self.calibration)
        guard = self.guard.onnx_logit(g, scaled)
        return z if guard is None else g.op("Max", z, guard)

    def _onnx_per_sensor(self, g: GraphBuilder, scaled: str, n: int) -> str:
        """Each sensor's attribution plus the floor [batch, n]."""
        terms = self.guard.onnx_attribution(g, scaled, onnx_attribution(self.detector, g, scaled))
        floor = g.const(np.full(n, ATTRIBUTION_FLOOR), "attribution_floor", np.float64)
        return g.op("Gemm", terms, g.const(self._per_sensor(), "per_sensor", np.float64), floor)
