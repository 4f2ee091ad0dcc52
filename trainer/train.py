"""Training: CSV → fitted pipeline → ONNX with manifest, refused unless it matches the reference."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from agent.atomic import write_atomically
from agent.model.manifest import (
    MANIFEST_KEY,
    Algorithm,
    Manifest,
    Parity,
    SensorSpec,
    Thresholds,
    TrainingSummary,
    graph_sha256,
)
from agent.model.score import Scorer
from agent.model.table import Table, read_table
from trainer.buffer_db import BufferReadings, read_buffer
from trainer.calibration import ALERT_THRESHOLD, LEVELS
from trainer.detectors import DEFAULT_ALGORITHM, Param, default_settings
from trainer.features import check_names, sliding_windows
from trainer.metrics import classification_metrics
from trainer.pipeline import Pipeline
from trainer.streaming import fit_stream

log = logging.getLogger(__name__)

# Largest |ONNX score - reference score| export accepts, over every window of the file checked.
PARITY_TOLERANCE = 1e-4
# The fewest training windows: one more than the ten past the first that --train-rows needs.
_LEAST_WINDOWS = 11
_PARITY_MAX_WINDOWS = 50_000


class ExportError(RuntimeError):
    """The fitted model failed the export check (its graph does not match the reference)."""


class TrainInputError(ValueError):
    """The data or the options cannot train a model; the message names which."""


@dataclass(frozen=True)
class TrainOptions:
    """None for window, features or threshold_factor means the detector's own default
    (`detectors.default_settings`)."""

    sensors: list[str] | None = None
    algorithm: str = DEFAULT_ALGORITHM
    contamination: float = 0.01
    window: int | None = None
    train_rows: int | None = None
    label_column: str | None = None
    seed: int = 42
    features: list[str] | None = None
    threshold_factor: float | None = None
    model_id: str = "detector"
    model_version: str = "1"
    members: list[str] | None = None  # an ensemble's detectors (default pca, gaussian_mixture)
    params: dict[str, Param] | None = None  # a plain detector's own options (n_estimators, ...)
    # The stream layer's settings over `streaming.DEFAULT_STREAM` (experiments choose them).
    stream: dict[str, float | int] | None = None


@dataclass
class TrainResult:
    pipeline: Pipeline
    manifest: Manifest
    model_bytes: bytes

    def summary(self) -> dict[str, object]:
        m = self.manifest
        return {
            "model_id": m.model_id,
            "version": m.version,
            "algorithm": m.algorithm.name,
            "sensors": m.sensor_names,
            "window": m.window,
            "training_rows": m.training.rows,
            "alert_threshold": m.alert_threshold,
            "metrics": m.training.metrics,
            "parity_max_abs_error": m.parity.max_abs_error,
            "model_bytes": len(self.model_bytes),
        }


def train(
    csv_path: str | Path, options: TrainOptions, progress: Callable[[str], None] | None = None
) -> TrainResult:
    """Fit, export and parity-check; `progress` hears each stage as it starts and ends (a
    one-class SVM or LOF on a large file takes a while)."""
    table = read_table(csv_path)
    sensors = options.sensors or table.sensor_columns(options.label_column)
    _check_options(table, sensors, options)
    labels = table.labels(options.label_column) if options.label_column else None
    return train_values(
        table.matrix(sensors),
        sensors,
        options,
        table.path.name,
        labels,
        progress,
        times=table.times(),
    )


def train_values(
    values: np.ndarray,
    sensors: list[str],
    options: TrainOptions,
    source: str,
    labels: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
    starts: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> TrainResult:
    """`train` on readings already in memory: [rows, sensors] in `sensors` order (the Python
    API's way in). `labels` (0/1 per row) only feed the metrics. `starts`: rows where a new
    stretch of consecutive readings begins (readings left out between), windows are cut
    within a stretch only; None is one stretch. `times` (epoch seconds per row) give the
    model a daily profile (agent/model/profile.py); without them it has none."""
    options = resolved(options)
    _check_shape(values, sensors, options)
    if starts is None:
        _check_train_rows(len(values), options, source)
    elif options.train_rows is not None or labels is not None:
        raise TrainInputError("--train-rows and labels need one stretch of readings")
    with _Stages(progress) as step:
        fit_rows = values if options.train_rows is None else values[: options.train_rows]
        windows = _windows(fit_rows, options.window, starts)
        if len(windows) < _LEAST_WINDOWS:
            raise TrainInputError(
                f"{source}: {len(windows)} windows of {options.window} readings within the "
                f"kept stretches are too few (at least {_LEAST_WINDOWS} are needed)"
            )
        step.begin(
            f"fitting {options.algorithm} on {len(windows)} windows of {len(sensors)} sensors"
        )
        pipeline, raw = Pipeline.fit(
            windows,
            sensors,
            check_names(options.features),
            options.algorithm,
            options.contamination,
            options.seed,
            options.members,
            options.threshold_factor,
            options.params,
        )
        all_windows = _windows(values, options.window, starts)
        step.begin(f"scoring {len(all_windows)} windows for the training metrics")
        metrics = _metrics(pipeline, raw, all_windows, labels, options)
        step.begin("building the ONNX graph")
        graph = pipeline.to_onnx()
        manifest = Manifest(
            model_id=options.model_id,
            version=options.model_version,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            sensors=[_sensor_spec(name, fit_rows[:, j]) for j, name in enumerate(sensors)],
            window=options.window,
            features=pipeline.features,
            algorithm=Algorithm(
                name=options.algorithm,
                params={
                    **pipeline.detector.params(),
                    "threshold_factor": options.threshold_factor,
                },
            ),
            contamination=options.contamination,
            alert_threshold=ALERT_THRESHOLD,
            thresholds=Thresholds(**LEVELS),
            training=TrainingSummary(
                source=source,
                rows=len(fit_rows),
                windows=len(windows),
                seed=options.seed,
                label_column=options.label_column,
                metrics=metrics,
            ),
            parity=Parity(max_abs_error=0.0, tolerance=PARITY_TOLERANCE, windows_checked=0),
            stream=fit_stream(
                pipeline,
                raw,
                fit_rows,
                options.stream,
                None if times is None else times[: len(fit_rows)],
            ),
            graph_sha256=graph_sha256(graph.SerializeToString()),
        )
        check_windows = all_windows[:_PARITY_MAX_WINDOWS]
        step.begin(f"checking the graph against the reference on {len(check_windows)} windows")
        error = _parity_error(pipeline, _with_manifest(graph, manifest), check_windows)
        if not error <= PARITY_TOLERANCE:
            raise ExportError(
                f"ONNX scores differ from the reference by up to {error:.3g} "
                f"(tolerance {PARITY_TOLERANCE}); refusing to export"
            )
        parity = Parity(
            max_abs_error=error, tolerance=PARITY_TOLERANCE, windows_checked=len(check_windows)
        )
        manifest = manifest.model_copy(update={"parity": parity})
        step.end()
    return TrainResult(pipeline, manifest, _with_manifest(graph, manifest))


def train_from_db(
    database: str | Path,
    asset: str,
    since: float | None,
    until: float | None,
    options: TrainOptions,
    progress: Callable[[str], None] | None = None,
) -> tuple[TrainResult, BufferReadings]:
    """Refit on an asset's readings in an agent's buffer database, its alert episodes left
    out (`trainer.buffer_db`); sensors default to those stored with the readings."""
    if options.train_rows is not None:
        raise TrainInputError(
            "--train-rows does not apply to --from-db: choose the readings with --since/--until"
        )
    if options.label_column is not None:
        raise TrainInputError("--label-column does not apply to --from-db (no labels stored)")
    window = resolved(options).window
    data = read_buffer(database, asset, since, until, margin=window)
    sensors = options.sensors or data.sensors
    unknown = [s for s in sensors if s not in data.sensors]
    if unknown:
        raise TrainInputError(f"sensor(s) {unknown} are not stored; stored: {data.sensors}")
    columns = [data.sensors.index(s) for s in sensors]
    if len(data.ts) < window:
        raise TrainInputError(
            f"{data.source}: {data.in_range} readings in the range, {len(data.ts)} left after "
            f"leaving out {data.episodes} alert episode(s) and {window} readings around each: "
            f"fewer than one window of {window}"
        )
    result = train_values(
        data.values[:, columns],
        sensors,
        options,
        data.source,
        None,
        progress,
        data.starts,
        data.ts,
    )
    return result, data


class _Stages:
    """Each stage said as it starts, a `still …` line every `every` seconds while it runs (a
    one-class SVM on a big file fits for minutes in one call), and how long it took."""

    def __init__(self, say: Callable[[str], None] | None, every: float = 10.0) -> None:
        self.say = say
        self.every = every
        self._started: float | None = None
        self._what = ""
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> _Stages:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop_ticker()

    def begin(self, what: str) -> None:
        self.end()
        if self.say is None:
            return
        self.say(f"{what} ...")
        self._what, self._started = what.split(" ")[0], time.perf_counter()
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="train-progress", daemon=True)
        self._ticker.start()

    def end(self) -> None:
        self._stop_ticker()
        if self.say is not None and self._started is not None:
            self.say(f"  done in {time.perf_counter() - self._started:.1f} s")
        self._started = None

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            elapsed = time.perf_counter() - (self._started or time.perf_counter())
            self.say(f"  still {self._what}, {elapsed:.0f} s so far")

    def _stop_ticker(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None


def write_model(result: TrainResult, out: str | Path) -> Path:
    """Written atomically, so a reader never sees half a model."""
    return write_atomically(out, result.model_bytes)


def resolved(options: TrainOptions) -> TrainOptions:
    """The options with the detector's defaults filled in where they were left as None."""
    own = default_settings(options.algorithm)
    return replace(
        options,
        window=own.window if options.window is None else options.window,
        features=list(own.features) if options.features is None else options.features,
        threshold_factor=(
            own.threshold_factor if options.threshold_factor is None else options.threshold_factor
        ),
    )


def _check_options(table: Table, sensors: list[str], options: TrainOptions) -> None:
    if not sensors:
        raise TrainInputError(f"{table.path}: no numeric sensor columns (columns: {table.header})")
    numeric = set(table.numeric_columns())
    bad = [s for s in sensors if s not in numeric]
    if bad:
        raise TrainInputError(f"{table.path}: sensor column(s) {bad} missing or not numeric")
    if options.label_column and options.label_column not in numeric:
        raise TrainInputError(
            f"{table.path}: label column {options.label_column!r} missing or not numeric"
        )
    if options.label_column in sensors:
        raise TrainInputError(f"label column {options.label_column!r} cannot also be a sensor")


def _check_shape(values: np.ndarray, sensors: list[str], options: TrainOptions) -> None:
    if values.ndim != 2 or values.shape[1] != len(sensors) or not sensors:
        raise TrainInputError(
            f"readings of shape {values.shape} do not match {len(sensors)} sensor name(s)"
        )
    if len(set(sensors)) != len(sensors):
        raise TrainInputError(f"sensor names repeat: {sensors}")
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise TrainInputError(
            f"reading {values[row, col]} at row {row} of sensor {sensors[col]!r} is not finite"
        )
    if options.window < 1:
        raise TrainInputError("--window must be at least 1")
    if options.window < 2 and "rate_of_change" in options.features:
        raise TrainInputError(
            "--window 1 is too short for the rate_of_change feature (it needs 2 readings)"
        )
    if not 0 < options.contamination < 0.5:
        raise TrainInputError("--contamination must be in (0, 0.5)")
    if not options.threshold_factor > 0:
        raise TrainInputError("--threshold-factor must be positive")


def _check_train_rows(rows: int, options: TrainOptions, source: str) -> None:
    """--train-rows must lie within the data; it used to fall back silently to every row when
    0, negative or past the end (issue 15). Ten windows past the first is the least to fit."""
    wanted = options.train_rows
    if wanted is not None and not 1 <= wanted <= rows:
        raise TrainInputError(
            f"--train-rows {wanted} is out of range: {source} has {rows} rows "
            f"(give 1 to {rows}, or leave it out to fit on every row)"
        )
    fit = rows if wanted is None else wanted
    least = options.window + 10
    if fit < least:
        which = f"--train-rows {wanted}" if wanted is not None else f"{source}'s {rows} rows"
        raise TrainInputError(
            f"{which} are too few for a window of {options.window}: "
            f"at least {least} rows are needed ({source} has {rows} rows)"
        )


def _windows(values: np.ndarray, window: int, starts: np.ndarray | None) -> np.ndarray:
    """Every full window within each stretch (`train_values`)."""
    if starts is None:
        return sliding_windows(values, window)
    bounds = [*starts.tolist(), len(values)]
    parts = [
        sliding_windows(values[a:b], window)
        for a, b in itertools.pairwise(bounds)
        if b - a >= window
    ]
    if not parts:
        return np.empty((0, window, values.shape[1]))
    return np.concatenate(parts)


def _metrics(
    pipeline: Pipeline,
    raw: np.ndarray,
    windows: np.ndarray,
    labels: np.ndarray | None,
    options: TrainOptions,
) -> dict[str, float]:
    flagged = float((pipeline.calibration.apply(raw) >= ALERT_THRESHOLD).mean())
    metrics = {"train_flagged_fraction": flagged}
    if labels is not None:
        labels = labels[options.window - 1 :]
        predicted = pipeline.reference_scores(windows) >= ALERT_THRESHOLD
        metrics.update(classification_metrics(labels, predicted))
    return metrics


def _sensor_spec(name: str, column: np.ndarray) -> SensorSpec:
    return SensorSpec(
        name=name,
        mean=float(column.mean()),
        std=float(column.std()),
        min=float(column.min()),
        max=float(column.max()),
    )


def _with_manifest(graph: onnx.ModelProto, manifest: Manifest) -> bytes:
    model = onnx.ModelProto()
    model.CopyFrom(graph)
    helper.set_model_props(model, {MANIFEST_KEY: manifest.model_dump_json()})
    return model.SerializeToString()


def _parity_error(pipeline: Pipeline, model_bytes: bytes, windows: np.ndarray) -> float:
    scorer = Scorer.from_bytes(model_bytes, Path("<export>"))
    got = scorer.score(windows)
    want_score, want_contrib = pipeline.reference(windows)
    return float(
        max(
            np.abs(got.score - want_score).max(),
            np.abs(got.contributions - want_contrib).max(),
        )
    )
