"""Windowed features, each defined twice side by side: the numpy reference and its ONNX nodes.

A window is [batch, window, n_sensors] of raw readings. Every feature maps it to
[batch, n_sensors]; features are concatenated feature-major (all sensors' `last`, then all
sensors' `mean`, ...), so feature f of sensor s sits at column f * n_sensors + s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from trainer.graph import GraphBuilder


@dataclass(frozen=True)
class Feature:
    name: str
    describe: str
    reference: Callable[[np.ndarray], np.ndarray]
    onnx: Callable[[GraphBuilder, str, int], str]


def _last(g: GraphBuilder, w: str, window: int) -> str:
    return g.once("last", lambda: g.op("Gather", w, g.const(window - 1, "idx", np.int64), axis=1))


def _prev(g: GraphBuilder, w: str, window: int) -> str:
    return g.once("prev", lambda: g.op("Gather", w, g.const(window - 2, "idx", np.int64), axis=1))


def _mean(g: GraphBuilder, w: str, window: int) -> str:
    return g.once("mean", lambda: g.op("ReduceMean", w, axes=[1], keepdims=0))


def _std(g: GraphBuilder, w: str, window: int) -> str:
    def build() -> str:
        centered = g.op("Sub", w, g.op("ReduceMean", w, axes=[1], keepdims=1))
        return g.op(
            "Sqrt", g.op("ReduceMean", g.op("Mul", centered, centered), axes=[1], keepdims=0)
        )

    return g.once("std", build)


def _deviation(g: GraphBuilder, w: str, window: int) -> str:
    return g.op("Sub", _last(g, w, window), _mean(g, w, window))


def _rate(g: GraphBuilder, w: str, window: int) -> str:
    return g.op("Sub", _last(g, w, window), _prev(g, w, window))


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature("last", "the newest reading", lambda w: w[:, -1], _last),
        Feature("mean", "mean over the window", lambda w: w.mean(axis=1), _mean),
        Feature("std", "standard deviation over the window", lambda w: w.std(axis=1), _std),
        Feature(
            "deviation",
            "newest reading minus the window mean",
            lambda w: w[:, -1] - w.mean(axis=1),
            _deviation,
        ),
        Feature(
            "rate_of_change",
            "newest reading minus the one before",
            lambda w: w[:, -1] - w[:, -2],
            _rate,
        ),
        Feature(
            "min",
            "lowest reading in the window",
            lambda w: w.min(axis=1),
            lambda g, w, _n: g.op("ReduceMin", w, axes=[1], keepdims=0),
        ),
        Feature(
            "max",
            "highest reading in the window",
            lambda w: w.max(axis=1),
            lambda g, w, _n: g.op("ReduceMax", w, axes=[1], keepdims=0),
        ),
    )
}
# The shipped default; `min` and `max` are there to be chosen (`--features`).
DEFAULT_FEATURES = ("last", "mean", "std", "deviation", "rate_of_change")


def check_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; choose from {list(FEATURES)}")
    if not names:
        raise ValueError("at least one feature is needed")
    return names


def reference_features(windows: np.ndarray, names: list[str], exact: bool = False) -> np.ndarray:
    """[batch, len(names) * n_sensors], computed in float64 from float32 readings; unless
    `exact`, rounded once to float32.

    Both sides compute in float64 and round once to float32, so a tree detector sees the same
    values from the graph as from this reference (float32 arithmetic differs between numpy and
    ONNX Runtime by an ulp, and an ulp can flip a tree split). Float64 detectors skip the
    rounding and the graph saves two casts.
    """
    w = windows.astype(np.float32).astype(np.float64)
    x = np.concatenate([FEATURES[n].reference(w) for n in names], axis=1)
    return x if exact else x.astype(np.float32)


def onnx_features(
    g: GraphBuilder, window_input: str, window: int, names: list[str], exact: bool = False
) -> str:
    w = g.op("Cast", window_input, to=TensorProto.DOUBLE)
    parts = [FEATURES[n].onnx(g, w, window) for n in names]
    joined = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=1)
    return joined if exact else g.op("Cast", joined, to=TensorProto.FLOAT)


def sliding_windows(values: np.ndarray, window: int) -> np.ndarray:
    """Every full window of consecutive rows: [rows - window + 1, window, n_sensors]."""
    if len(values) < window:
        raise ValueError(f"{len(values)} rows are fewer than one window of {window}")
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1))
