"""Windowed features, each defined twice side by side: the numpy reference and its graph form.

A window is [batch, window, n_sensors] of raw readings. Every feature maps it to
[batch, n_sensors]. A linear feature (last, mean, deviation, rate of change) is a weighted sum
over the window's positions, so all of them come out of one MatMul; the others (std, min, max)
build their own nodes. ONNX Runtime charges about a third of a microsecond per node, whatever
the node does, so this saves most of the feature block's nodes. Columns follow `layout`: linear
features first, then the others, each group in the order named; feature f of sensor s sits at
column f * n_sensors + s.
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
    # Linear: the weight of each position in the window (oldest first), given the window.
    weights: Callable[[int], np.ndarray] | None = None
    # Otherwise: nodes from the float64 window to [batch, 1, n_sensors].
    onnx: Callable[[GraphBuilder, str, int], str] | None = None


def _at(window: int, *positions: tuple[int, float]) -> np.ndarray:
    row = np.zeros(window)
    for position, weight in positions:
        row[position] += weight
    return row


def _std(g: GraphBuilder, w: str, window: int) -> str:
    # sqrt(sum((x - mean)^2) / window) as one MatMul by (I - 1/window) / sqrt(window), then L2.
    centering = (np.eye(window) - 1.0 / window) / np.sqrt(window)
    centered = g.op("MatMul", g.const(centering, "std_center", np.float64), w)
    return g.op("ReduceL2", centered, axes=[1], keepdims=1)


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            "last", "the newest reading", lambda w: w[:, -1], weights=lambda n: _at(n, (-1, 1.0))
        ),
        Feature(
            "mean",
            "mean over the window",
            lambda w: w.mean(axis=1),
            weights=lambda n: np.full(n, 1.0 / n),
        ),
        Feature("std", "standard deviation over the window", lambda w: w.std(axis=1), onnx=_std),
        Feature(
            "deviation",
            "newest reading minus the window mean",
            lambda w: w[:, -1] - w.mean(axis=1),
            weights=lambda n: _at(n, (-1, 1.0)) - 1.0 / n,
        ),
        Feature(
            "rate_of_change",
            "newest reading minus the one before",
            lambda w: w[:, -1] - w[:, -2],
            weights=lambda n: _at(n, (-1, 1.0), (-2, -1.0)),
        ),
        Feature(
            "min",
            "lowest reading in the window",
            lambda w: w.min(axis=1),
            onnx=lambda g, w, _n: g.op("ReduceMin", w, axes=[1], keepdims=1),
        ),
        Feature(
            "max",
            "highest reading in the window",
            lambda w: w.max(axis=1),
            onnx=lambda g, w, _n: g.op("ReduceMax", w, axes=[1], keepdims=1),
        ),
    )
}
# The shipped default; `min` and `max` are there to be chosen (`--features`).
DEFAULT_FEATURES = ("last", "mean", "std", "deviation", "rate_of_change")
# Not a feature: the window itself, [batch, window, n_sensors], for detectors that read
# sequences (`sequence = True`, the LSTM autoencoder); it stands alone.
SEQUENCE = "sequence"


def layout(names: list[str]) -> list[str]:
    """The features in column order: the linear ones (one MatMul) first, then the others."""
    linear = [n for n in names if FEATURES[n].weights is not None]
    return linear + [n for n in names if FEATURES[n].weights is None]


def check_names(names: list[str]) -> list[str]:
    if SEQUENCE in names:
        if names != [SEQUENCE]:
            raise ValueError(f"{SEQUENCE!r} is the whole window and cannot be combined: {names}")
        return names
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; choose from {list(FEATURES)}")
    if not names:
        raise ValueError("at least one feature is needed")
    return names


def reference_features(windows: np.ndarray, names: list[str], exact: bool = False) -> np.ndarray:
    """[batch, len(names) * n_sensors] in `layout` order, computed in float64 from float32
    readings; unless `exact`, rounded once to float32.

    Both sides compute in float64 and round once to float32, so a tree detector sees the same
    values from the graph as from this reference (float32 arithmetic differs between numpy and
    ONNX Runtime by an ulp, and an ulp can flip a tree split). Float64 detectors skip the
    rounding and the graph saves two casts.
    """
    w = windows.astype(np.float32).astype(np.float64)
    if names == [SEQUENCE]:
        return w
    x = np.concatenate([FEATURES[n].reference(w) for n in layout(names)], axis=1)
    return x if exact else x.astype(np.float32)


def onnx_features(
    g: GraphBuilder, window_input: str, window: int, names: list[str], exact: bool = False
) -> str:
    """[batch, len(names), n_sensors] in `layout` order (flattened, that is the reference's
    column order)."""
    w = g.op("Cast", window_input, to=TensorProto.DOUBLE)
    if names == [SEQUENCE]:
        return w
    order = layout(names)
    rows = [FEATURES[n].weights(window) for n in order if FEATURES[n].weights is not None]
    parts = (
        [g.op("MatMul", g.const(np.stack(rows), "feature_weights", np.float64), w)] if rows else []
    )
    parts += [FEATURES[n].onnx(g, w, window) for n in order if FEATURES[n].weights is None]
    joined = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=1)
    return joined if exact else g.op("Cast", joined, to=TensorProto.FLOAT)


def sliding_windows(values: np.ndarray, window: int) -> np.ndarray:
    """Every full window of consecutive rows: [rows - window + 1, window, n_sensors]."""
    if len(values) < window:
        raise ValueError(f"{len(values)} rows are fewer than one window of {window}")
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1))
