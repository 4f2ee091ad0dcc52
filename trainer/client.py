"""`PynomalyClient`: the hands-on tutorial's one-call detection, on top of `AnomalyDetector`.

`detect_anomalies(data, algorithm=..., contamination=...)` fits a detector on the rows it is
given and flags the `contamination` share of them, the way the tutorials' earlier library did;
every score comes from the exported ONNX graph, as on a gateway.

A batch too small to fit on (one transaction, one sensor reading) is scored instead against
history: a model given to `load_model` or `fit`, or else a detector fitted on the most recent
rows shown to any client in this process whose columns include the batch's. Clients share that
workspace as the earlier library's clients shared their server, so a monitor object holding a
fresh client can score single readings once history has been shown. With neither, the client
says what to do rather than inventing a baseline from one row. The workspace is bounded
(datasets, rows per dataset, fitted and loaded models).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.api import AnomalyDetector
from trainer.detectors import DETECTORS, Param, default_settings, is_sequence_detector

log = logging.getLogger(__name__)

MAX_DATASETS = 8  # histories kept, most recent first
MAX_ROWS = 100_000  # per history: the newest rows
MAX_MODELS = 16  # fitted on a history, or loaded / fitted explicitly


class NeedsHistoryError(ValueError):
    """A batch too small to fit on, and nothing to score it against; the message says what to
    do (show history with the batch's columns first, or load a model)."""


@dataclass
class Workspace:
    """What clients in one process were shown: histories keyed by their columns and the
    models fitted on them or given explicitly; every part bounded, least recent dropped."""

    histories: OrderedDict[tuple[str, ...], np.ndarray] = field(default_factory=OrderedDict)
    fitted: OrderedDict[tuple[Any, ...], AnomalyDetector] = field(default_factory=OrderedDict)
    models: OrderedDict[int, AnomalyDetector] = field(default_factory=OrderedDict)

    def remember(self, columns: list[str], values: np.ndarray) -> None:
        key = tuple(columns)
        self.histories.pop(key, None)
        self.histories[key] = values[-MAX_ROWS:].copy()
        self.fitted = OrderedDict((k, d) for k, d in self.fitted.items() if k[0] != key)
        _trim(self.histories, MAX_DATASETS)

    def keep_model(self, detector: AnomalyDetector) -> None:
        self.models[id(detector)] = detector
        _trim(self.models, MAX_MODELS)

    def model_for(self, columns: list[str]) -> AnomalyDetector | None:
        """The most recent explicit model whose sensors the batch has."""
        for detector in reversed(self.models.values()):
            if set(detector.sensors) <= set(columns):
                return detector
        return None

    def fit_on_history(self, columns: list[str], settings: dict[str, Any]) -> AnomalyDetector:
        for key, values in reversed(self.histories.items()):
            if not set(columns) <= set(key):
                continue
            cache = (key, tuple(columns), tuple(sorted(settings.items())))
            if cache not in self.fitted:
                rows = values[:, [key.index(c) for c in columns]]
                log.info("scoring against %d rows seen earlier with columns %s", len(rows), key)
                self.fitted[cache] = _fit(rows, columns, settings)
                _trim(self.fitted, MAX_MODELS)
            self.fitted.move_to_end(cache)
            return self.fitted[cache]
        raise LookupError(columns)


_SHARED = Workspace()


class PynomalyClient:
    """Detection in one call; see the module's docstring for how small batches are scored.

    `workspace` defaults to the one all clients in the process share; pass `Workspace()` for
    a client that sees only its own history.
    """

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = _SHARED if workspace is None else workspace

    def detect_anomalies(
        self,
        data: Any,
        algorithm: str = "isolation_forest",
        contamination: float = 0.05,
        return_explanations: bool = False,
        time_series: bool = False,
        random_state: int = 42,
        **options: Param,
    ) -> dict[str, Any]:
        """Flag anomalous rows of `data` (a DataFrame, a list of dicts or a 2-D array).

        Returns `predictions` (bool per row, True = anomaly), `scores` (in [0, 1], higher is
        more anomalous; at or above `threshold` is an anomaly), `detector` (the fitted or
        loaded `AnomalyDetector`: `.save(path)` writes the gateway's model) and, when asked,
        `explanations`: per row `{"feature_importance": {column: share}}`, each column's share
        of the score. `time_series=True` scores each row with the window of rows ending at
        it (rows must be consecutive; the first window's rows score 0); `options` are the
        detector's own (e.g. `n_estimators=200` for the isolation forest).
        """
        columns, values = table_of(data)
        settings = _settings(algorithm, contamination, time_series, random_state, options)
        if _can_fit(len(values), settings):
            detector = _fit(values, columns, settings)
            self.workspace.remember(columns, values)
        else:
            detector = self._against_history(columns, settings, len(values))
        return _results(detector, values, columns, return_explanations)

    def fit(self, history: Any, **settings: Any) -> AnomalyDetector:
        """Fit on history explicitly; later small batches with its columns score against it."""
        columns, values = table_of(history)
        chosen = _settings(
            settings.pop("algorithm", "isolation_forest"),
            settings.pop("contamination", 0.05),
            settings.pop("time_series", False),
            settings.pop("random_state", 42),
            settings,
        )
        if not _can_fit(len(values), chosen):
            raise ValueError(_too_few(len(values), chosen))
        detector = _fit(values, columns, chosen)
        self.workspace.keep_model(detector)
        return detector

    def load_model(self, path: str | Path) -> AnomalyDetector:
        """A saved model (`AnomalyDetector.save`, `edge-trainer train`) to score batches with."""
        detector = AnomalyDetector.load(path)
        self.workspace.keep_model(detector)
        return detector

    def _against_history(
        self, columns: list[str], settings: dict[str, Any], rows: int
    ) -> AnomalyDetector:
        explicit = self.workspace.model_for(columns)
        if explicit is not None:
            return explicit
        try:
            return self.workspace.fit_on_history(columns, settings)
        except LookupError:
            raise NeedsHistoryError(
                f"{_too_few(rows, settings)}, and no model or earlier data in this process "
                f"has the columns {columns}. Fit on history first: call "
                "detect_anomalies(history) (or client.fit(history)) with past rows that have "
                "these columns, or load a saved model with client.load_model(path)"
            ) from None


def table_of(data: Any) -> tuple[list[str], np.ndarray]:
    """(column names, float64 [rows, columns]) from a DataFrame, a list of dicts (one per
    row, the same keys in each) or a 2-D array (columns named x0, x1, ...)."""
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):
        columns = [str(c) for c in data.columns]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"more than one column is named {repeated}")
        text = [c for c, t in zip(columns, data.dtypes, strict=True) if t.kind not in "biuf"]
        if text:
            raise ValueError(
                f"column(s) {text} do not hold numbers: encode them (say with "
                "sklearn's LabelEncoder) or leave them out"
            )
        return columns, _finite(data.to_numpy(dtype=np.float64), columns)
    if isinstance(data, list | tuple) and data and all(isinstance(r, dict) for r in data):
        columns = [str(k) for k in data[0]]
        for i, row in enumerate(data):
            if [str(k) for k in row] != columns:
                raise ValueError(f"row {i} has keys {list(row)}; row 0 has {columns}")
        cells = [[row[k] for k in data[0]] for row in data]
        return columns, _finite(_numbers(cells, columns), columns)
    values = _numbers(data, None)
    if values.ndim != 2:
        raise ValueError(f"data must be 2-D [rows, columns], got shape {values.shape}")
    columns = [f"x{j}" for j in range(values.shape[1])]
    return columns, _finite(values, columns)


def _numbers(cells: Any, columns: list[str] | None) -> np.ndarray:
    try:
        return np.asarray(cells, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        named = f" (columns {columns})" if columns else ""
        raise ValueError(f"data must hold numbers only{named}: {exc}") from None


def _finite(values: np.ndarray, columns: list[str]) -> np.ndarray:
    if values.ndim != 2 or not values.shape[0] or not values.shape[1]:
        raise ValueError(f"data must have rows and columns, got shape {values.shape}")
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, col = bad[0]
        raise ValueError(
            f"column {columns[col]!r} row {row} is {values[row, col]}: fill or drop missing "
            "values first (say data.fillna(0) or data.dropna())"
        )
    return values


def _settings(
    algorithm: str,
    contamination: float,
    time_series: bool,
    random_state: int,
    options: dict[str, Param],
) -> dict[str, Any]:
    if algorithm not in DETECTORS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {sorted(DETECTORS)}")
    if not 0 < contamination < 0.5:
        raise ValueError(f"contamination must be in (0, 0.5), got {contamination}")
    if is_sequence_detector(algorithm) and not time_series:
        raise ValueError(f"{algorithm} reads sequences of consecutive rows: pass time_series=True")
    window = default_settings(algorithm).window if time_series else 1
    return {
        "algorithm": algorithm,
        "contamination": float(contamination),
        "random_state": int(random_state),
        "window": window,
        **options,
    }


def _can_fit(rows: int, settings: dict[str, Any]) -> bool:
    """A batch is fitted on when its contamination names at least one row (below that no
    quantile can put a threshold between normal and anomalous rows) and it holds more rows
    than the trainer's minimum for its window."""
    return rows * settings["contamination"] >= 1 and rows >= settings["window"] + 10


def _too_few(rows: int, settings: dict[str, Any]) -> str:
    need = max(int(np.ceil(1 / settings["contamination"])), settings["window"] + 10)
    return (
        f"{rows} row(s) are too few to fit {settings['algorithm']} on (at contamination "
        f"{settings['contamination']} it needs at least {need})"
    )


def _fit(values: np.ndarray, columns: list[str], settings: dict[str, Any]) -> AnomalyDetector:
    # threshold_factor 1: `contamination` is the share of rows flagged, as the tutorials read it.
    detector = AnomalyDetector(**{"threshold_factor": 1.0, **settings})
    return detector.fit(values, sensors=columns)


def _results(
    detector: AnomalyDetector, values: np.ndarray, columns: list[str], explain: bool
) -> dict[str, Any]:
    window = detector.manifest.window
    if len(values) < window:
        raise ValueError(
            f"{len(values)} row(s) are fewer than the model's window of {window} consecutive "
            "rows: pass at least that many recent rows (the last row's score is the newest)"
        )
    sensors = detector.sensors
    rows = values[:, [columns.index(s) for s in sensors]]
    score = detector.score(rows)
    threshold = detector.manifest.alert_threshold
    out: dict[str, Any] = {
        "predictions": score >= threshold,
        "scores": score,
        "threshold": threshold,
        "detector": detector,
    }
    if explain:
        shares = detector.contributions(rows)
        out["explanations"] = [
            {"feature_importance": dict(zip(sensors, map(float, row), strict=True))}
            for row in shares
        ]
    return out


def _trim(cache: OrderedDict[Any, Any], limit: int) -> None:
    while len(cache) > limit:
        cache.popitem(last=False)
