"""The stream parameters a trained model carries (`Manifest.stream`), fitted from its training
windows: the baseline the agent's per-asset layer starts from, and for the `online` detector
its learning normal model. The defaults below were chosen by scripts/choose_defaults.py
(leave one category out on NAB's development half, one folder out on SKAB; docs/detection.md).
"""

from __future__ import annotations

import numpy as np

from agent.model.novelty import NoveltyParams
from agent.model.online import OnlineParams
from agent.model.profile import MAX_SENSORS as PROFILE_MAX_SENSORS
from agent.model.profile import Profile, ProfileParams, hour_of
from agent.model.stream import StreamParams
from trainer.pipeline import Pipeline

# The layer's settings every new model gets (docs/detection.md says how they were chosen).
DEFAULT_STREAM: dict[str, float | int] = {
    "long_window": 250,
    "short_window": 8,
    "alert_z": 2.0,
    "alarm_learning": 0.15,
    "hold": 1.0,
    "min_spread": 1.0,
    # Range novelty (agent/model/novelty.py); a tolerance of 0 leaves it out.
    "novelty_tolerance": 0.3,
    "novelty_memory": 1280,
    # Daily profile (agent/model/profile.py): its least learning rate; 0 leaves it out.
    "profile_rate": 0.01,
    # Tail gate (agent/model/stream.py): the running quantile an alert's short mean must pass
    # too, its step and its most, in spreads; a quantile of 0 leaves it out. Once an episode
    # is over, the gate keeps what `tail_climb` windows of it taught (0: all).
    "tail_quantile": 0.995,
    "tail_step": 0.05,
    "tail_cap": 8.0,
    "tail_climb": 30,
}
DEFAULT_LEARNING_RATE = 0.001
_QUANTILES = np.linspace(0.0, 1.0, 21)
_CLIP = 16.0


def fit_stream(
    pipeline: Pipeline,
    raw: np.ndarray,
    rows: np.ndarray,
    settings: dict[str, float | int] | None = None,
    times: np.ndarray | None = None,
) -> StreamParams:
    """`raw`: the detector's raw scores on the training windows, in time order; `rows`: the
    training readings [rows, sensors], whose ranges seed the range novelty; `times`: theirs in
    epoch seconds, which calibrate the daily profile (None: no profile)."""
    chosen = {**DEFAULT_STREAM, **(settings or {})}
    learning_rate = float(chosen.pop("learning_rate", DEFAULT_LEARNING_RATE))
    tolerance = float(chosen.pop("novelty_tolerance"))
    memory = int(chosen.pop("novelty_memory"))
    profile_rate = float(chosen.pop("profile_rate"))
    profile = None
    if profile_rate > 0 and times is not None:
        profile = _profile(rows, times, profile_rate, int(chosen["long_window"]))
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
        profile=profile,
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


def _profile(
    rows: np.ndarray, times: np.ndarray, rate: float, long_window: int
) -> ProfileParams | None:
    """The daily profile's calibration: its statistic over the training rows, in time order,
    from a blank profile (as a gateway starts), gives the median, the scale (90th percentile −
    median) and the baseline of the logit its likelihood starts from. None when the training
    rows' times are not all times, or nothing in them varies."""
    values = np.asarray(rows, dtype=np.float32).astype(np.float64)
    if len(values) < 2 or values.shape[1] > PROFILE_MAX_SENSORS or not np.isfinite(times).all():
        return None  # too many sensors: the state committed with every batch would be large
    spread = values.std(axis=0)
    spread = np.maximum(spread, np.maximum(np.abs(values).max(axis=0), 1.0) * 2.0**-23)
    draft = ProfileParams(
        rate=rate,
        mean=np.clip(values.mean(axis=0), -1e30, 1e30).tolist(),
        spread=np.clip(spread, 1e-30, 1e30).tolist(),
        median=0.0,
        scale=1.0,
        baseline_mean=0.0,
        baseline_std=0.0,
        baseline_weight=0,
    )
    profile = Profile(draft, values.shape[1])
    state = profile.new_state()
    hours = [hour_of(t) for t in times.tolist()]
    readings = values.tolist()
    stats = np.array([profile.statistic(state, h, r) for h, r in zip(hours, readings, strict=True)])
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return None
    median = float(np.median(stats))
    scale = float(np.quantile(stats, 0.9)) - median
    scale = max(scale, 1e-9 * max(1.0, abs(median)))
    final = draft.model_copy(update={"median": median, "scale": scale})
    logits = np.array([Profile(final, values.shape[1]).logit(s) for s in stats])
    return ProfileParams.model_validate(
        {
            **final.model_dump(),
            "baseline_mean": float(logits.mean()),
            "baseline_std": float(logits.std()),
            "baseline_weight": min(len(logits), long_window),
        }
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
    profile_rate = update.pop("profile_rate", None)
    if profile_rate == 0:
        update["profile"] = None
    elif profile_rate is not None and params.profile is not None:
        update["profile"] = params.profile.model_copy(update={"rate": profile_rate})
    # model_copy does not validate: the settings go through the manifest's checks.
    return StreamParams.model_validate(params.model_copy(update=update).model_dump())
