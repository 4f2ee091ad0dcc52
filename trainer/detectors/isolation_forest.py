"""Isolation forest exported as one TreeEnsembleRegressor node.

Each leaf carries its isolation depth (edges from the root plus the expected depth of the
samples left in it), so the node's average is the forest's mean path length; the score is
2 ** (-mean / c(max_samples)), as in scikit-learn. One tree-ensemble node scores a row in
microseconds, where a node-per-tree graph takes hundreds.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.ensemble import IsolationForest

from trainer.graph import GraphBuilder

_EULER_GAMMA = 0.5772156649015329


def average_path_length(n: np.ndarray | int) -> np.ndarray:
    """c(n): expected depth of an unsuccessful search in a binary tree of n samples."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + _EULER_GAMMA) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _float32_at_most(thresholds: np.ndarray) -> np.ndarray:
    """The largest float32 <= each threshold: for float32 x, x <= t32 exactly when x <= t."""
    t32 = thresholds.astype(np.float32)
    over = t32.astype(np.float64) > thresholds
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


class IsolationForestDetector:
    name = "isolation_forest"

    def __init__(self, n_estimators: int = 100, max_samples: int | str = "auto") -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self._model: IsolationForest | None = None

    def params(self) -> dict[str, float | int | str | bool | None]:
        return {"n_estimators": self.n_estimators, "max_samples": self.max_samples}

    def fit(self, features: np.ndarray, seed: int) -> None:
        self._model = IsolationForest(
            n_estimators=self.n_estimators, max_samples=self.max_samples, random_state=seed
        ).fit(features)

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        return -self._fitted().score_samples(features)

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        forest = self._fitted()
        attrs = _tree_ensemble_attributes(forest)
        mean_depth = g.op("TreeEnsembleRegressor", features, domain="ai.onnx.ml", **attrs)
        scale = -math.log(2.0) / float(average_path_length(forest.max_samples_))
        score = g.op("Exp", g.op("Mul", mean_depth, g.const(scale, "ln2_over_c")))
        return g.op("Reshape", score, g.const([-1], "flat", np.int64))

    def _fitted(self) -> IsolationForest:
        if self._model is None:
            raise RuntimeError("fit the detector first")
        return self._model


def _tree_ensemble_attributes(forest: IsolationForest) -> dict[str, object]:
    a: dict[str, list] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_modes",
            "nodes_values",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "target_treeids",
            "target_nodeids",
            "target_weights",
        )
    }
    for tree_id, (estimator, feature_map) in enumerate(
        zip(forest.estimators_, forest.estimators_features_, strict=True)
    ):
        tree = estimator.tree_
        depth = _node_depths(tree.children_left, tree.children_right)
        leaf_value = depth + average_path_length(tree.n_node_samples)
        thresholds = _float32_at_most(tree.threshold)
        for node in range(tree.node_count):
            is_leaf = tree.children_left[node] == -1
            a["nodes_treeids"].append(tree_id)
            a["nodes_nodeids"].append(node)
            a["nodes_featureids"].append(0 if is_leaf else int(feature_map[tree.feature[node]]))
            a["nodes_modes"].append("LEAF" if is_leaf else "BRANCH_LEQ")
            a["nodes_values"].append(0.0 if is_leaf else float(thresholds[node]))
            a["nodes_truenodeids"].append(0 if is_leaf else int(tree.children_left[node]))
            a["nodes_falsenodeids"].append(0 if is_leaf else int(tree.children_right[node]))
            if is_leaf:
                a["target_treeids"].append(tree_id)
                a["target_nodeids"].append(node)
                a["target_weights"].append(float(leaf_value[node]))
    return {
        **a,
        "target_ids": [0] * len(a["target_nodeids"]),
        "n_targets": 1,
        "aggregate_function": "AVERAGE",
        "post_transform": "NONE",
    }


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(left), dtype=np.float64)
    for node in range(len(left)):
        if left[node] != -1:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
    return depth
