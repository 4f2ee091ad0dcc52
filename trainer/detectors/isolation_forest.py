"""Isolation forest exported as one TreeEnsembleRegressor node.

Each leaf carries its isolation depth (edges from the root plus the expected depth of the
samples left in it) times -ln 2 / c(max_samples), so the node's average is the forest's mean
path length in those units and the score 2 ** (-mean / c), as in scikit-learn, is one Exp of
it. One tree-ensemble node scores a row in microseconds, where a node-per-tree graph takes
hundreds.

Contributions follow DIFFI (Carletti et al., depth-based isolation forest feature importance,
per sample): every split on a window's path credits its feature with 1 / the leaf's isolation
depth, averaged over the trees, so the features that isolated the window quickly get the
credit. The same node carries those credits as extra targets on each leaf (sparse: a leaf
credits only the features split on above it).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto
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
    float32_features = True  # its splits are float32 thresholds

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

    def reference_attribution(self, features: np.ndarray) -> np.ndarray:
        forest = self._fitted()
        out = np.zeros(features.shape, dtype=np.float64)
        for estimator, feature_map in zip(
            forest.estimators_, forest.estimators_features_, strict=True
        ):
            tree = estimator.tree_
            credit = _leaf_credits(tree, feature_map, features.shape[1])
            out += credit[estimator.apply(features[:, feature_map])]
        return out / len(forest.estimators_)

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        # Target 0 is the mean depth times -ln 2 / c (folded into the leaves), so the score
        # 2 ** (-depth / c) is one Exp of it; Gather takes the column as [batch].
        exponent = g.op("Gather", self._node(g, features), g.const(0, "target0", np.int64), axis=1)
        return g.op("Cast", g.op("Exp", exponent), to=TensorProto.DOUBLE)

    def onnx_attribution(self, g: GraphBuilder, features: str) -> str:
        n = self._fitted().n_features_in_
        credits = g.op("Slice", self._node(g, features), *self._columns(g, 1, n + 1))
        return g.op("Cast", credits, to=TensorProto.DOUBLE)

    def _node(self, g: GraphBuilder, features: str) -> str:
        """One TreeEnsembleRegressor: target 0 the mean depth, 1..n the features' credits."""
        attrs = _tree_ensemble_attributes(self._fitted())
        return g.once(
            f"forest_{id(self)}",
            lambda: g.op("TreeEnsembleRegressor", features, domain="ai.onnx.ml", **attrs),
        )

    @staticmethod
    def _columns(g: GraphBuilder, start: int, end: int) -> tuple[str, str, str]:
        return (
            g.const([start], "start", np.int64),
            g.const([end], "end", np.int64),
            g.const([1], "ax", np.int64),
        )

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
    target_ids: list[int] = []
    n_features = forest.n_features_in_
    for tree_id, (estimator, feature_map) in enumerate(
        zip(forest.estimators_, forest.estimators_features_, strict=True)
    ):
        tree = estimator.tree_
        # -ln 2 / c × the leaf's isolation depth: the node's average is the score's exponent.
        leaf_value = _isolation_depths(tree) * _exponent_per_depth(forest)
        credit = _leaf_credits(tree, feature_map, n_features)
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
            if not is_leaf:
                continue
            credited = np.flatnonzero(credit[node])
            for target, weight in [(0, leaf_value[node])] + [
                (j + 1, credit[node, j]) for j in credited
            ]:
                a["target_treeids"].append(tree_id)
                a["target_nodeids"].append(node)
                a["target_weights"].append(float(weight))
                target_ids.append(int(target))
    return {
        **a,
        "target_ids": target_ids,
        "n_targets": n_features + 1,
        "aggregate_function": "AVERAGE",
        "post_transform": "NONE",
    }


def _exponent_per_depth(forest: IsolationForest) -> float:
    """-ln 2 / c(max_samples): the score 2 ** (-depth / c) is exp of the depth times this."""
    return -math.log(2.0) / float(average_path_length(forest.max_samples_))


def _isolation_depths(tree: object) -> np.ndarray:
    """Per node: edges from the root plus c(samples left in it) — a leaf's isolation depth."""
    depth = _node_depths(tree.children_left, tree.children_right)
    return depth + average_path_length(tree.n_node_samples)


def _leaf_credits(tree: object, feature_map: np.ndarray, n_features: int) -> np.ndarray:
    """[nodes, n_features]: at each leaf, 1 / its isolation depth for every split on its path
    (a feature split on twice is credited twice); zero rows for inner nodes."""
    left, right = tree.children_left, tree.children_right
    splits = np.zeros((tree.node_count, n_features))
    for node in range(tree.node_count):  # parents come before their children
        if left[node] != -1:
            child = splits[node].copy()
            child[int(feature_map[tree.feature[node]])] += 1.0
            splits[left[node]] = splits[right[node]] = child
    leaves = left == -1
    credit = np.zeros_like(splits)
    credit[leaves] = splits[leaves] / _isolation_depths(tree)[leaves, None]
    return credit


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(left), dtype=np.float64)
    for node in range(len(left)):
        if left[node] != -1:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
    return depth
