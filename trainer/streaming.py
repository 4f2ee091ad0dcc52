"""The stream parameters a trained model carries (`Manifest.stream`), fitted from its training
windows: the baseline the agent's per-asset layer starts from, and for the `online` detector
its learning normal model. The defaults below were chosen by scripts/choose_defaults.py
(leave one category out on NAB's development half, one folder out on SKAB; docs/detection.md).
"""

from __future__ import annotations

import numpy as np

from agent.model.online import OnlineParams
from agent.model.stream import StreamParams
from trainer.pipeline import Pipeline

# The layer's settings every new model gets (docs/detection.md says how they were chosen).
DEFAULT_STREAM: dict[str, float | int] = {
    "long_window": 250,
    "short_window": 8,
    "alert_z": 2.5,
    "alarm_learning": 0.15,
    "hold": 2.0,
    "min_spread": 1.0,
}
DEFAULT_LEARNING_RATE = 0.001
_QUANTILES = np.linspace(0.0, 1.0, 21)
_CLIP = 16.0


def fit_stream(
    pipeline: Pipeline, raw: np.ndarray, settings: dict[str, float | int] | None = None
) -> StreamParams:
    """`raw`: the detector's raw scores on the training windows, in time order."""
    chosen = {**DEFAULT_STREAM, **(settings or {})}
    learning_rate = float(chosen.pop("learning_rate", DEFAULT_LEARNING_RATE))
    logits = np.clip(pipeline.calibration.logit(raw), -_CLIP, _CLIP)
    # The gateway's online model recomputes the `mean` and `std` features itself; trained on
    # other features (the Python API's one-row windows use `last`), the detector's graph is a
    # plain z-score and the layer works over its score alone.
    learns = pipeline.detector.name == "online" and pipeline.features == ["mean", "std"]
    online = _online(pipeline, learning_rate) if learns else None
    return StreamParams(
        method="online" if online is not None else "likelihood",
        baseline_mean=float(logits.mean()),
        baseline_std=float(logits.std()),
        baseline_weight=min(len(logits), int(chosen["long_window"])),
        online=online,
        reference_quantiles=np.quantile(pipeline.calibration.apply(raw), _QUANTILES).tolist(),
        **chosen,
    )


def _online(pipeline: Pipeline, learning_rate: float) -> OnlineParams:
    """The `online` detector's fit in raw feature units: the graph standardises (x − m) / s and
    the z-score then divides (· − μ) by σ, so raw mean m + s μ and raw spread s σ."""
    mu, sigma = pipeline.detector._fitted()
    scaler = pipeline.scaler
    return OnlineParams(
        mean=(scaler.mean + scaler.std * mu).tolist(),
        scale=(scaler.std * sigma).tolist(),
        threshold=pipeline.calibration.threshold,
        spread=pipeline.calibration.scale,
        learning_rate=learning_rate,
    )
