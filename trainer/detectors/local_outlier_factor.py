"""Local outlier factor in novelty mode: raw score = the window's LOF against the training
windows (near 1 inside a cluster, larger outside).

Exported with the `cdist`-style trick rather than a node per neighbour: distances to every
kept training window as one MatMul (|x|² - 2 x·t + |t|²), `TopK` for the k nearest, and the
training windows' k-distances and local reachability densities gathered by index, in float64.
Fitted on at most `max_train` windows (a seeded sample), which bounds the graph's work.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from sklearn.neighbors import LocalOutlierFactor

from trainer.graph import GraphBuilder, squared_distances


class LocalOutlierFactorDetector:
    name = "local_outlier_factor"

    def __init__(self, n_neighbors: int = 20, max_train: int = 400) -> None:
        self.n_neighbors = n_neighbors
        self.max_train = max_train
        self._model: LocalOutlierFactor | None = None
        self._fit_x: np.ndarray | None = None

    def params(self) -> dict[str, float | int | str | bool | None]:
        kept = None if self._fit_x is None else len(self._fit_x)
        return {"n_neighbors": self.n_neighbors, "novelty": True, "training_windows": kept}

    def fit(self, features: np.ndarray, seed: int) -> None:
        x = features.astype(np.float64)
        if len(x) > self.max_train:
            rows = np.random.default_rng(seed).choice(len(x), self.max_train, replace=False)
            x = x[np.sort(rows)]
        self._model = LocalOutlierFactor(
            n_neighbors=self.n_neighbors, novelty=True, algorithm="brute"
        ).fit(x)
        self._fit_x = x

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        return -self._fitted().score_samples(features.astype(np.float64))

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        m = self._fitted()
        assert self._fit_x is not None
        fit_x, k = self._fit_x, m.n_neighbors_
        f64 = np.float64
        x = g.op("Cast", features, to=TensorProto.DOUBLE)
        # The k nearest by squared distance (the same order), then the root of those k only.
        near_sq, index = g.op_multi(
            "TopK",
            [squared_distances(g, x, fit_x, "lof"), g.const([k], "lof_k", np.int64)],
            2,
            axis=1,
            largest=0,
            sorted=1,
        )
        # reach = max(d, k-distance) = sqrt(max(d², k-distance²)): one root, and no clamp for
        # a d² that rounding took a hair below 0.
        k_distance_sq = g.const(m._distances_fit_X_[:, k - 1] ** 2, "lof_kdist_sq", f64)
        reach = g.op("Sqrt", g.op("Max", near_sq, g.op("Gather", k_distance_sq, index, axis=0)))
        mean_reach = g.op("ReduceMean", reach, axes=[1], keepdims=0)
        # LOF = mean(lrd of the neighbours) / lrd, with lrd = 1 / (mean reach + 1e-10).
        neighbours_lrd = g.op("Gather", g.const(m._lrd, "lof_lrd", f64), index, axis=0)
        lof = g.op(
            "Mul",
            g.op("ReduceMean", neighbours_lrd, axes=[1], keepdims=0),
            g.op("Add", mean_reach, g.const(1e-10, "lof_eps", f64)),
        )
        return lof

    def _fitted(self) -> LocalOutlierFactor:
        if self._model is None:
            raise RuntimeError("fit the detector first")
        return self._model
