"""The stream parameters a trained model carries (`Manifest.stream`), fitted from its training
windows: the baseline the agent's per-asset layer starts from, and for the `online` detector
its learning normal model. The defaults below were chosen by scripts/choose_defaults.py
(leave one category out on NAB's development half, one folder out on SKAB; docs/detection.md).
"""

from __future__ import annotations

import numpy as np

from agent.model.novelty import NoveltyParams
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
    # Range novelty (agent/model/novelty.py); a tolerance of 0 leaves it out.
    "novelty_tolerance": 0.3,
    "novelty_memory": 320,
}
DEFAULT_LEARNING_RATE = 0.001
_QUANTILES = np.linspace(0.0, 1.0, 21)
_CLIP = 16.0


def fit_stream(
    pipeline: Pipeline,
    raw: np.ndarray,
    rows: np.ndarray,
    settings: dict[str, float | int] | None = None,
) -> StreamParams:
    """`raw`: the detector's raw scores on the training windows, in time order; `rows`: the
    training readings [rows, sensors], whose ranges seed the range novelty."""
    chosen = {**DEFAULT_STREAM, **(settings or {})}
    learning_rate = float(chosen.pop("learning_rate", DEFAULT_LEARNING_RATE))
    tolerance = float(chosen.pop("novelty_tolerance"))
    memory = int(chosen.pop("novelty_memory"))
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
        novelty=_novelty(rows, tolerance, memory) if tolerance > 0 else None,
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


def _novelty(rows: np.ndarray, tolerance: float, memory: int) -> NoveltyParams:
    """Each sensor's training range, at the float32 resolution the agent reads at."""
    values = np.asarray(rows, dtype=np.float32).astype(np.float64)
    return NoveltyParams(
        tolerance=tolerance,
        memory=memory,
        low=np.clip(np.nanmin(values, axis=0), -1e30, 1e30).tolist(),
        high=np.clip(np.nanmax(values, axis=0), -1e30, 1e30).tolist(),
    )


def with_settings(params: StreamParams, settings: dict[str, float | int]) -> StreamParams:
    """`params` (a trained model's) with other layer settings, as an experiment tries them:
    the keys of DEFAULT_STREAM and `learning_rate` (the `online` model's). A novelty tolerance
    of 0 leaves the range novelty out; a model trained without it cannot take one."""
    update = dict(settings)
    rate = update.pop("learning_rate", None)
    if rate is not None and params.online is not None:
        update["online"] = params.online.model_copy(update={"learning_rate": rate})
    tolerance = update.pop("novelty_tolerance", None)
    memory = update.pop("novelty_memory", None)
    novelty = params.novelty
    if tolerance == 0:
        novelty = None
    elif novelty is not None:
        changes = {"tolerance": tolerance, "memory": memory}
        novelty = novelty.model_copy(update={k: v for k, v in changes.items() if v is not None})
    elif tolerance is not None:
        raise ValueError("a novelty tolerance for a model trained without range novelty")
    update["novelty"] = novelty
    # model_copy does not validate: the settings go through the manifest's checks.
    return StreamParams.model_validate(params.model_copy(update=update).model_dump())
