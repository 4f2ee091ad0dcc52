"""The tutorials' Python API: an estimator that fits like scikit-learn and saves a gateway model.

Tutorials teach `fit` / `predict` / `decision_function` on a scikit-learn detector and then ask
how to run it on a device. `AnomalyDetector` keeps those habits, but what it fits is this
project's pipeline, and from the moment `fit` returns it scores with the exported ONNX graph
through the agent's own scorer, so what a notebook sees is what the gateway will compute.

>>> import numpy as np
>>> from trainer import AnomalyDetector, f1_score, recall_score
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(1000, 3))
>>> detector = AnomalyDetector(algorithm="isolation_forest", contamination=0.05, random_state=42)
>>> detector.fit(X)
AnomalyDetector(algorithm='isolation_forest', contamination=0.05, random_state=42)
>>> detector.predict([[0.1, -0.2, 0.0], [6.0, 6.0, -6.0]]).tolist()
[1, -1]
>>> bool(detector.decision_function([[6.0, 6.0, -6.0]])[0] < 0)
True
>>> y = np.r_[np.zeros(100), np.ones(20)]
>>> X_test = np.r_[rng.normal(size=(100, 3)), rng.normal(5, 1, size=(20, 3))]
>>> flagged = detector.predict(X_test) == -1
>>> round(recall_score(y, flagged), 2), bool(f1_score(y, flagged) > 0.7)
(1.0, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.atomic import write_atomically
from agent.model.manifest import Manifest
from agent.model.offline import scored_values
from agent.model.score import Scorer, read_model
from agent.model.table import read_table
from trainer.detectors import Param, chosen_options, default_settings, is_sequence_detector
from trainer.detectors.ensemble import DEFAULT_MEMBERS
from trainer.features import SEQUENCE, sliding_windows
from trainer.train import TrainOptions, train_values

ArrayLike = Any  # a numpy array, a list of rows, or a pandas DataFrame


@dataclass(frozen=True)
class ScoredFile:
    """One file's scores: `timestamps` as the file's time column holds them (row numbers when
    it has none), `score` one per row (0 before the first full window)."""

    path: Path
    timestamps: list[str]
    score: np.ndarray


class NotFittedError(RuntimeError):
    """Scoring or saving was asked of a detector that was neither fitted nor loaded."""


class AnomalyDetector:
    """Fit on rows of readings (one column per sensor); 1 = normal, -1 = anomaly, like scikit-learn.

    `window` is how many consecutive rows one score looks at. The default of 1 scores each row
    on its own, as the tutorials' scikit-learn detectors do, so rows may come in any order. With
    a longer window (the command line's default is the detector's: 20 for zscore and online,
    10 for the others) rows must be consecutive readings, the window's features (`features`,
    default the detector's) see how readings move, and each row is scored with the window that
    ends at it; rows before the first full window score 0 (normal), as on the gateway.

    Scores come from the exported ONNX graph (ONNX Runtime) as soon as `fit` returns, so they
    equal what `edge-agent` computes from the saved file.

    >>> import numpy as np
    >>> X = np.random.default_rng(1).normal(size=(500, 2))
    >>> detector = AnomalyDetector(contamination=0.02, threshold_factor=1.0).fit(X)
    >>> float(detector.score(X).min()) >= 0.0 and float(detector.score(X).max()) <= 1.0
    True
    >>> round(float((detector.predict(X) == -1).mean()), 2)  # the contamination, on training rows
    0.02

    The default detector (`online`, a z-score) puts its threshold three times as far past the
    training median (`threshold_factor=3`), leaving room for normal operation to wander further than
    the training stretch did, so it flags fewer training rows than the contamination:

    >>> float((AnomalyDetector(contamination=0.02).fit(X).predict(X) == -1).mean()) < 0.02
    True
    """

    def __init__(
        self,
        algorithm: str = TrainOptions.algorithm,
        contamination: float = TrainOptions.contamination,
        random_state: int = TrainOptions.seed,
        window: int = 1,
        features: Sequence[str] | None = None,
        members: Sequence[str] | None = None,
        threshold_factor: float | None = None,
        **options: Param,
    ) -> None:
        self.algorithm = algorithm
        self.contamination = contamination
        self.random_state = random_state
        self.window = window
        self.features = _names("features", features)
        self.members = _names("members", members)
        self.threshold_factor = threshold_factor
        self.options = dict(options)  # the detector's own options, e.g. n_estimators=200
        self._model: bytes | None = None
        self._scorer: Scorer | None = None

    def __repr__(self) -> str:
        shown = [
            f"algorithm={self.algorithm!r}",
            f"contamination={self.contamination!r}",
            f"random_state={self.random_state!r}",
        ]
        if self.window != 1:
            shown.append(f"window={self.window!r}")
        if self.features is not None:
            shown.append(f"features={self.features!r}")
        if self.members is not None:
            shown.append(f"members={self.members!r}")
        if self.threshold_factor is not None:
            shown.append(f"threshold_factor={self.threshold_factor!r}")
        shown += [f"{k}={v!r}" for k, v in self.options.items()]
        return f"AnomalyDetector({', '.join(shown)})"

    # -- fitting and persistence -------------------------------------------------------------

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        sensors: Sequence[str] | None = None,
        times: ArrayLike | None = None,
    ) -> AnomalyDetector:
        """Fit on X, export the graph and check it against the reference; labels are ignored
        (`y` is accepted so the call reads like scikit-learn's). `sensors` names an array's
        columns (a DataFrame's are its column names). `times`, each row's time (epoch seconds
        or datetimes), give the model the stream's daily profile, as `edge-trainer train`
        does from a file's time column."""
        values, sensors = _readings(X, _names("sensors", sensors))
        if is_sequence_detector(self.algorithm) and self.window < 2:
            raise ValueError(
                f"{self.algorithm} reads sequences of consecutive rows: give it a window, "
                f"e.g. AnomalyDetector(algorithm={self.algorithm!r}, window="
                f"{default_settings(self.algorithm).window})"
            )
        options = TrainOptions(
            sensors=sensors,
            algorithm=self.algorithm,
            contamination=self.contamination,
            window=self.window,
            seed=self.random_state,
            features=self.features
            if self.features is not None
            else _implied_features(self.algorithm, self.window),
            threshold_factor=self.threshold_factor,
            model_id="anomaly_detector",
            members=self.members,
            params=self.options or None,
        )
        stamps = None if times is None else _seconds(times)
        if stamps is not None and len(stamps) != len(values):
            raise ValueError(f"{len(stamps)} times for {len(values)} rows")
        result = train_values(values, sensors, options, "AnomalyDetector.fit", times=stamps)
        self._model = result.model_bytes
        self._scorer = Scorer.from_bytes(result.model_bytes, Path("<fitted>"))
        return self

    def save(self, path: str | Path) -> Path:
        """Write the ONNX model (the one file a gateway runs); atomically."""
        if self._model is None:
            raise NotFittedError("fit or load the detector before saving it")
        return write_atomically(path, self._model)

    @classmethod
    def load(cls, path: str | Path) -> AnomalyDetector:
        """A detector that scores with a saved model (checked as the agent checks it)."""
        data = read_model(path)
        scorer = Scorer.from_bytes(data, Path(path))
        m = scorer.manifest
        detector = cls(
            algorithm=m.algorithm.name,
            contamination=m.contamination,
            random_state=m.training.seed,
            window=m.window,
            features=None
            if m.features == _implied_features(m.algorithm.name, m.window)
            else m.features,
            members=_chosen_members(m),
            threshold_factor=_chosen_factor(m),
            **chosen_options(m.algorithm.name, m.algorithm.params),
        )
        detector._model, detector._scorer = data, scorer
        return detector

    @property
    def manifest(self) -> Manifest:
        """The model's manifest: sensors, thresholds, training summary, parity."""
        return self._fitted().manifest

    @property
    def sensors(self) -> list[str]:
        return self.manifest.sensor_names

    @property
    def model(self) -> FittedModel:
        """The fitted estimator's parameters as attributes (`detector.model.n_estimators`),
        read from the manifest, so a loaded model shows the same as a freshly fitted one."""
        return FittedModel(self.manifest.algorithm.name, dict(self.manifest.algorithm.params))

    # -- scoring -----------------------------------------------------------------------------

    def score(self, X: ArrayLike) -> np.ndarray:
        """Calibrated scores in [0, 1]; at or above 0.5 (the alert threshold) is an anomaly.
        Each row's window is scored alone by the graph (`edge-agent score`'s `graph_score`);
        `stream_scores` gives what the agent alerts on."""
        return self._scores(X)[0]

    def stream_scores(self, X: ArrayLike, times: ArrayLike | None = None) -> np.ndarray:
        """The scores the agent alerts on: `X`'s rows taken as one asset's readings in time
        order, each window's graph score passed through the model's stream layer (what
        `edge-agent score` prints as `score`; `score` here is its `graph_score`). Rows before
        the first full window score 0. The layer's state starts fresh on every call. `times`,
        each row's time (epoch seconds or datetimes), feed the daily profile of a model
        trained with times; without them it is left out.

        >>> import numpy as np
        >>> X = np.random.default_rng(2).normal(size=(600, 1))
        >>> detector = AnomalyDetector(window=10).fit(X[:400])
        >>> shifted = np.r_[X[400:], X[400:] + 8.0]
        >>> s = detector.stream_scores(shifted)
        >>> bool(s[:200].max() < 0.5), bool(s[200:].max() >= 0.5)
        (True, True)
        """
        scorer = self._fitted()
        values = _readings(X, scorer.manifest.sensor_names)[0]
        rows = scored_values(scorer, values, times=None if times is None else _seconds(times))
        return np.array([0.0 if r is None else r.score for r in rows])

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Alert threshold minus score: lower is more anomalous, at or below 0 an anomaly."""
        return self.manifest.alert_threshold - self.score(X)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """1 for a normal row, -1 for an anomaly (scikit-learn's convention)."""
        return np.where(self.score(X) >= self.manifest.alert_threshold, -1, 1)

    def contributions(self, X: ArrayLike) -> np.ndarray:
        """[rows, sensors]: each sensor's share in the row's score (rows sum to 1), the same
        attribution an alert's `sensors` list is taken from."""
        return self._scores(X)[1]

    def score_files(self, paths: Iterable[str | Path]) -> Iterator[ScoredFile]:
        """Score CSV files one after another with this detector's one ONNX Runtime session (no
        reload per file), each file read as `edge-agent score` reads it (its sensor columns by
        name, its time column) and scored from its own first row; one `ScoredFile` per path,
        in order, as each is done.

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for name, level in (("a.csv", 0.0), ("b.csv", 8.0)):
        ...     rows = [f"2026-01-01T00:{m:02d}:00Z,{np.sin(m / 5) / 2 + level}" for m in range(60)]
        ...     _ = (folder / name).write_text("ts,sensor_0\\n" + "\\n".join(rows) + "\\n")
        >>> X = np.sin(np.arange(700) / 5).reshape(-1, 1)
        >>> detector = AnomalyDetector(algorithm="pca").fit(X)
        >>> [(f.path.name, f.timestamps[0], float((f.score >= 0.5).mean()))
        ...  for f in detector.score_files([folder / "a.csv", folder / "b.csv"])]
        [('a.csv', '2026-01-01T00:00:00Z', 0.0), ('b.csv', '2026-01-01T00:00:00Z', 1.0)]
        """
        scorer = self._fitted()
        for path in paths:
            table = read_table(path)
            values = table.matrix(scorer.manifest.sensor_names)
            score, _ = score_rows(scorer, values)
            yield ScoredFile(Path(path), table.timestamps(), score)

    def _scores(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        scorer = self._fitted()
        return score_rows(scorer, _readings(X, scorer.manifest.sensor_names)[0])

    def _fitted(self) -> Scorer:
        if self._scorer is None:
            raise NotFittedError("this AnomalyDetector is not fitted yet: call fit(X) or load()")
        return self._scorer


class FittedModel:
    """A read-only view of a fitted detector's parameters; an unknown name says which exist."""

    def __init__(self, algorithm: str, params: dict[str, Param]) -> None:
        self._algorithm = algorithm
        self._params = params

    def __getattr__(self, name: str) -> Param:
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        raise AttributeError(
            f"the fitted {self.__dict__.get('_algorithm')} model has no parameter {name!r}; "
            f"it has {sorted(params)}"
        )

    def get_params(self) -> dict[str, Param]:
        """All parameters, as scikit-learn's estimators give them."""
        return dict(self._params)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"FittedModel({self._algorithm}: {shown})"


def _names(what: str, names: Sequence[str] | None) -> list[str] | None:
    if isinstance(names, str):
        raise TypeError(f"{what} must be a list of names, e.g. {what}=[{names!r}], not a string")
    return None if names is None else [str(n) for n in names]


def score_rows(scorer: Scorer, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score [rows], contributions [rows, sensors]) of consecutive readings, each row scored
    with the window ending at it; rows before the first full window score 0 with no
    contributions, as the gateway leaves them unscored."""
    n, w = len(values), scorer.manifest.window
    score = np.zeros(n)
    contributions = np.zeros((n, values.shape[1]))
    if n >= w:
        scored = scorer.score_many(sliding_windows(values, w))
        score[w - 1 :] = scored.score
        contributions[w - 1 :] = scored.contributions
    return score, contributions


def _chosen_members(m: Manifest) -> list[str] | None:
    chosen = m.algorithm.params.get("members")
    if not isinstance(chosen, str) or chosen == ",".join(DEFAULT_MEMBERS):
        return None
    return chosen.split(",")


def _chosen_factor(m: Manifest) -> float | None:
    factor = m.algorithm.params.get("threshold_factor")
    return None if factor == default_settings(m.algorithm.name).threshold_factor else factor


def _implied_features(algorithm: str, window: int) -> list[str]:
    """What `fit` uses when no features are given: row by row (window 1) the reading itself,
    otherwise the detector's own choice."""
    own = list(default_settings(algorithm).features)
    return ["last"] if window == 1 and own != [SEQUENCE] else own


def _readings(X: ArrayLike, sensors: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """(float64 [rows, sensors], sensor names) from an array or a DataFrame.

    A DataFrame's columns are matched by name (any order, extra columns ignored when scoring);
    an array's columns are taken in the fitted order and named sensor_0, sensor_1, ...
    """
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        names = [str(c) for c in X.columns]
        wanted = sensors or names
        repeated = sorted({n for n in names if names.count(n) > 1} & set(wanted))
        if repeated:
            raise ValueError(f"X has more than one column named {repeated}")
        missing = [s for s in wanted if s not in names]
        if missing:
            raise ValueError(f"X has no column(s) {missing}; it has {names}")
        columns = [X.columns[names.index(s)] for s in wanted]
        text = [str(c) for c in columns if X[c].dtype.kind not in "biuf"]
        if text:
            raise ValueError(
                f"X's column(s) {text} do not hold numbers; pass only the sensor columns"
            )
        values = _numeric(X[columns].to_numpy(), wanted)
        return values, wanted
    values = _numeric(X, None)
    names = sensors or [f"sensor_{j}" for j in range(values.shape[1])]
    if values.shape[1] != len(names):
        raise ValueError(f"X has {values.shape[1]} column(s); the model expects {len(names)}")
    return values, names


def _numeric(X: ArrayLike, names: list[str] | None) -> np.ndarray:
    try:
        values = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        which = f" (columns {names})" if names else ""
        raise ValueError(f"X must hold numbers only{which}: {exc}") from None
    if values.ndim != 2:
        raise ValueError(
            f"X must be 2-D [rows, sensors], got shape {values.shape}; "
            "for one sensor use X.reshape(-1, 1)"
        )
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        column = names[col] if names else f"column {col}"
        raise ValueError(f"X has a non-finite value {values[row, col]} at row {row}, {column}")
    return values


def _seconds(times: ArrayLike) -> np.ndarray:
    """Epoch seconds from numbers or datetimes (numpy's, pandas', Python's; naive ones as UTC)."""
    stamps = np.asarray(times)
    if stamps.dtype.kind == "M":
        return stamps.astype("datetime64[ns]").astype(np.int64) / 1e9
    if stamps.dtype.kind == "O":
        return np.array([_epoch(t) for t in stamps.tolist()], dtype=np.float64)
    return stamps.astype(np.float64)


def _epoch(t: object) -> float:
    if isinstance(t, datetime):  # pandas' Timestamp is one
        return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()
    return float(t)  # a number; anything else is refused by float() with its value
