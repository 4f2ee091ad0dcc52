"""Local outlier factor in novelty mode: raw score = the window's LOF against the training
windows (near 1 inside a cluster, larger outside), scikit-learn's definition with its 1e-10 in
the local reachability density replaced by 1e-3 (see `_LRD_EPS`).

Exported with the `cdist`-style trick to find the neighbours rather than a node per neighbour:
distances to every kept training window as one Gemm (|x|² - 2 x·t + |t|²) and `TopK` for the k
nearest. That expansion loses the small distances to cancellation (a window equal to a training
window comes out at about 1e-8 instead of 0), and LOF divides by them: on series with repeated
windows (integer counts) a distance of 0 against 1e-8 moved lrd by orders of magnitude, and the
export was refused (issue 15). So the k neighbours' distances are computed again exactly, as
differences, from the gathered windows, and the reference (numpy, not scikit-learn, whose
distances take the same shortcut) computes every distance as differences too.

Ties: integer-valued series (tweet counts) put two training windows at exactly the same distance
from a window, often right at the k-th place, and which one was kept depended on rounding (the
other refusals of issue 15). The neighbourhood is therefore the paper's (Breunig et al., 2000):
every training window no further than the k-th nearest, ties included, taken from 2k candidates.
Fitted on at most `max_train` windows (a seeded sample), which bounds the graph's work.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from trainer.graph import GraphBuilder, squared_distances

# lrd = 1 / (mean reach distance + _LRD_EPS), in standard units of the features. scikit-learn
# adds 1e-10, below the rounding of a feature computed in two ways (about 1e-10 standard units
# once a constant feature is measured in its float32 resolution), so in a cluster of repeated
# windows lrd was rounding noise; a thousandth of a standard deviation is far above that noise
# and changes the LOF of windows whose neighbours are further than 0.1 apart by under 1 %.
_LRD_EPS = 1e-3
# Squared distances within a billionth of the k-th count as ties: two ways of summing a few
# dozen squares differ by under 1e-14, distinct windows of float32 readings by far more.
_TIE = 1e-9
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
        self._fit = (x, np.zeros(len(x)), np.zeros(len(x)))
        d_sq = exact_squared_distances(x, x)
        np.fill_diagonal(d_sq, np.inf)  # a training window is not its own neighbour
        index, near_sq, member = self._neighbourhoods(d_sq)
        k_distance_sq = np.where(member, near_sq, 0.0).max(axis=1)
        reach = np.sqrt(np.maximum(near_sq, k_distance_sq[index]))
        lrd = 1.0 / (_masked_mean(reach, member) + _LRD_EPS)
        self._fit = (x, k_distance_sq, lrd)

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        fit_x, k_distance_sq, lrd = self._fitted()
        x = features.astype(np.float64)
        out = np.empty(len(x))
        for start in range(0, len(x), _CHUNK):
            index, near_sq, member = self._neighbourhoods(
                exact_squared_distances(x[start : start + _CHUNK], fit_x)
            )
            reach = np.sqrt(np.maximum(near_sq, k_distance_sq[index]))
            mean_reach = _masked_mean(reach, member)
            out[start : start + _CHUNK] = _masked_mean(lrd[index], member) * (mean_reach + _LRD_EPS)
        return out

    def _neighbourhoods(self, d_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidate index, exact squared distance, in the neighbourhood) [rows, candidates]:
        the candidates are the nearest, lower index first on ties; the neighbourhood is every
        candidate no further than the k-th (ties included, as in Breunig et al.)."""
        index = np.argsort(d_sq, axis=1, kind="stable")[:, : self._candidates()]
        near_sq = np.take_along_axis(d_sq, index, axis=1)
        kth = near_sq[:, self._k() - 1 : self._k()]
        return index, near_sq, near_sq <= kth + kth * _TIE

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        fit_x, k_distance_sq, lrd = self._fitted()
        f64, i64 = np.float64, np.int64
        x = g.op("Cast", features, to=TensorProto.DOUBLE)
        # Candidates by the Gemm's squared distance, nearest first, lower index first on ties.
        _, index = g.op_multi(
            "TopK",
            [squared_distances(g, x, fit_x, "lof"), g.const([self._candidates()], "lof_c", i64)],
            2,
            axis=1,
            largest=0,
            sorted=1,
        )
        # Their distances again, exactly: [batch, candidates, features] differences.
        neighbours = g.op("Gather", g.const(fit_x, "lof_fit", f64), index, axis=0)
        diff = g.op("Sub", neighbours, g.op("Unsqueeze", x, g.const([1], "lof_ax1", i64)))
        near_sq = g.op("ReduceSum", g.op("Mul", diff, diff), g.const([2], "lof_ax2", i64))
        near_sq = g.op("Squeeze", near_sq, g.const([2], "lof_ax2s", i64))
        # The neighbourhood: candidates no further than the k-th nearest (the largest of the k
        # smallest), ties included.
        smallest, _ = g.op_multi(
            "TopK", [near_sq, g.const([self._k()], "lof_k", i64)], 2, axis=1, largest=0
        )
        kth = g.op("ReduceMax", smallest, axes=[1], keepdims=1)
        # kth + kth·tie, not kth·(1 + tie): ONNX Runtime's optimizer drops a Mul by a constant
        # within float32 rounding of 1 as a no-op (seen with 1.32), which lost the ties again.
        bound = g.op("Add", kth, g.op("Mul", kth, g.const(_TIE, "lof_tie", f64)))
        member = g.op("Cast", g.op("LessOrEqual", near_sq, bound), to=TensorProto.DOUBLE)
        size = g.op("ReduceSum", member, g.const([1], "lof_ax1r", i64), keepdims=0)
        # reach = max(d, k-distance) = sqrt(max(d², k-distance²)): one root.
        kd_sq = g.op("Gather", g.const(k_distance_sq, "lof_kdist_sq", f64), index, axis=0)
        reach = g.op("Sqrt", g.op("Max", near_sq, kd_sq))
        neighbours_lrd = g.op("Gather", g.const(lrd, "lof_lrd", f64), index, axis=0)
        # LOF = mean(lrd of the neighbours) / lrd, with lrd = 1 / (mean reach + _LRD_EPS).
        mean_reach = g.op("Div", _onnx_masked_sum(g, reach, member), size)
        mean_lrd = g.op("Div", _onnx_masked_sum(g, neighbours_lrd, member), size)
        return g.op("Mul", mean_lrd, g.op("Add", mean_reach, g.const(_LRD_EPS, "lof_eps", f64)))

    def _candidates(self) -> int:
        """Rows looked at per window: twice k, so up to k ties at the k-th are all counted."""
        return min(2 * self._k(), len(self._fitted()[0]) - 1)

    def _k(self) -> int:
        return min(self.n_neighbors, len(self._fitted()[0]) - 1)

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._fit is None:
            raise RuntimeError("fit the detector first")
        return self._fit


def exact_squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] squared Euclidean distances as sums of squared differences (no
    cancellation: equal rows are exactly 0)."""
    diff = a[:, None, :] - b[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


def _masked_mean(values: np.ndarray, member: np.ndarray) -> np.ndarray:
    return np.where(member, values, 0.0).sum(axis=1) / member.sum(axis=1)


def _onnx_masked_sum(g: GraphBuilder, values: str, member: str) -> str:
    return g.op(
        "ReduceSum", g.op("Mul", values, member), g.const([1], "lof_ax1m", np.int64), keepdims=0
    )
