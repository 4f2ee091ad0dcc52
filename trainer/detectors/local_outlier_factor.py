"""Local outlier factor in novelty mode: raw score = the window's LOF against the training
windows (near 1 inside a cluster, larger outside), scikit-learn's definition but for two
choices below that make it well defined under rounding.

Exported with the `cdist`-style trick rather than a node per neighbour: squared distances to
every kept training window as one Gemm (|x|² - 2 x·t + |t|²), `TopK` for the k nearest, and the
training windows' k-distances and local reachability densities gathered by index, in float64.
Fitted on at most `max_train` windows (a seeded sample), which bounds the graph's work.

Why the two choices (issue 15: four NAB series refused by 0.00025-0.039):
- *Cancellation.* The expansion gives a distance of about 1e-7 for a window equal to a training
  window (0 exactly in the reference), and LOF divides by reachability distances: on series of
  repeated windows (integer counts) lrd moved by orders of magnitude. So a reachability
  distance is never below `_REACH_FLOOR` (a thousandth of a standard unit): below it both
  computations agree exactly, whatever the rounding.
- *Ties.* Integer counts put two training windows at exactly the same distance, often at the
  k-th place, and rounding chose which one was kept. So training window j's squared distance
  carries j × `_TIE_STEP` (folded into the Gemm's bias, no extra node): equal distances go to the
  lower index on both sides, while the step is far above the Gemm's rounding and far below
  `_REACH_FLOOR`² in total.
The reference (numpy, not scikit-learn, whose distances take the same shortcut) computes the
distances as differences, exactly.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from trainer.calibration import Calibration
from trainer.graph import GraphBuilder, squared_distances

# A reachability distance is at least this, in standard units of the features (see above).
_REACH_FLOOR = 1e-3
# Added to the squared distance to training window j, times j: with at most a few hundred
# windows it adds under 1e-8 (1 % of _REACH_FLOOR²), and it stays above the Gemm's rounding
# (~1e-16 of |x|² + |t|²) for windows within about 300 standard units.
_TIE_STEP = 1e-11
_CHUNK = 128  # reference windows per block of exact distances (bounds its memory)


class LocalOutlierFactorDetector:
    name = "local_outlier_factor"

    def __init__(self, n_neighbors: int = 20, max_train: int = 400) -> None:
        self.n_neighbors = n_neighbors
        self.max_train = max_train
        self._fit: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def params(self) -> dict[str, float | int | str | bool | None]:
        kept = None if self._fit is None else len(self._fit[0])
        return {"n_neighbors": self.n_neighbors, "novelty": True, "training_windows": kept}

    def fit(self, features: np.ndarray, seed: int) -> None:
        x = features.astype(np.float64)
        if len(x) > self.max_train:
            rows = np.random.default_rng(seed).choice(len(x), self.max_train, replace=False)
            x = x[np.sort(rows)]
        if len(x) < 2:
            raise ValueError("local_outlier_factor needs at least 2 training windows")
        k = min(self.n_neighbors, len(x) - 1)
        d_sq = _ordered(exact_squared_distances(x, x))
        np.fill_diagonal(d_sq, np.inf)  # a training window is not its own neighbour
        index = np.argsort(d_sq, axis=1, kind="stable")[:, :k]
        near_sq = np.take_along_axis(d_sq, index, axis=1)
        k_distance_sq = near_sq[:, -1]
        lrd = 1.0 / _reach(near_sq, k_distance_sq[index]).mean(axis=1)
        self._fit = (x, k_distance_sq, lrd)

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        fit_x, k_distance_sq, lrd = self._fitted()
        k = self._k()
        x = features.astype(np.float64)
        out = np.empty(len(x))
        for start in range(0, len(x), _CHUNK):
            d_sq = _ordered(exact_squared_distances(x[start : start + _CHUNK], fit_x))
            index = np.argsort(d_sq, axis=1, kind="stable")[:, :k]
            near_sq = np.take_along_axis(d_sq, index, axis=1)
            mean_reach = _reach(near_sq, k_distance_sq[index]).mean(axis=1)
            out[start : start + _CHUNK] = lrd[index].mean(axis=1) * mean_reach
        return out

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        mean_reach, neighbours_lrd = self._onnx_terms(g, features, "ReduceMean", 1.0)
        return g.op("Mul", g.op("ReduceMean", neighbours_lrd, axes=[1], keepdims=0), mean_reach)

    def onnx_logit(self, g: GraphBuilder, features: str, cal: Calibration) -> str:
        """(LOF - t) / s with 1 / (k² s) folded into the gathered densities: sums instead of
        means, and no division node."""
        k = self._k()
        factor = 1.0 / (k * k * cal.scale)
        sum_reach, neighbours_lrd = self._onnx_terms(g, features, "ReduceSum", factor)
        lof_over_s = g.op("Mul", _sum_over_neighbours(g, neighbours_lrd), sum_reach)
        return g.op(
            "Sub", lof_over_s, g.const(cal.threshold / cal.scale, "cal_t_over_s", np.float64)
        )

    def _onnx_terms(
        self, g: GraphBuilder, features: str, reduce: str, lrd_factor: float
    ) -> tuple[str, str]:
        """The neighbours' reachability distances reduced by `reduce` (mean or sum) [batch],
        and their local reachability densities times `lrd_factor`, gathered [batch, k]."""
        fit_x, k_distance_sq, lrd = self._fitted()
        f64 = np.float64
        x = g.op("Cast", features, to=TensorProto.DOUBLE)
        # The k nearest by squared distance (+ j × _TIE_STEP), in no particular order (their
        # means do not depend on it; sorting costs ONNX Runtime about 0.3 µs), then one root.
        near_sq, index = g.op_multi(
            "TopK",
            [
                squared_distances(g, x, fit_x, "lof", _TIE_STEP * np.arange(len(fit_x))),
                g.const([self._k()], "lof_k", np.int64),
            ],
            2,
            axis=1,
            largest=0,
            sorted=0,
        )
        # reach = max(d, k-distance, floor) = sqrt(max(d², max(k-distance², floor²))): one
        # root, the floor taken into the table, and no clamp for a d² that rounding took a
        # hair below 0.
        floored = np.maximum(k_distance_sq, _REACH_FLOOR**2)
        reach = g.op(
            "Sqrt",
            g.op(
                "Max", near_sq, g.op("Gather", g.const(floored, "lof_kdist_sq", f64), index, axis=0)
            ),
        )
        reach_term = (
            _sum_over_neighbours(g, reach)
            if reduce == "ReduceSum"
            else g.op("ReduceMean", reach, axes=[1], keepdims=0)
        )
        # LOF = mean(lrd of the neighbours) / lrd, with lrd = 1 / mean reach.
        table = g.const(lrd * lrd_factor, "lof_lrd", f64)
        return reach_term, g.op("Gather", table, index, axis=0)

    def _k(self) -> int:
        return min(self.n_neighbors, len(self._fitted()[0]) - 1)

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._fit is None:
            raise RuntimeError("fit the detector first")
        return self._fit


def _sum_over_neighbours(g: GraphBuilder, x: str) -> str:
    return g.op("ReduceSum", x, g.const([1], "ax", np.int64), keepdims=0)


def exact_squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] squared Euclidean distances as sums of squared differences (no
    cancellation: equal rows are exactly 0)."""
    diff = a[:, None, :] - b[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


def _ordered(d_sq: np.ndarray) -> np.ndarray:
    """Squared distances plus j × _TIE_STEP for training window j (the graph's tie-break)."""
    return d_sq + _TIE_STEP * np.arange(d_sq.shape[1])


def _reach(near_sq: np.ndarray, k_distance_sq: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(np.maximum(near_sq, k_distance_sq), _REACH_FLOOR**2))
