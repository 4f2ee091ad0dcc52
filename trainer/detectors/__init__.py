"""The detector registry: one name, one class, one interface (`base.Detector`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from trainer.detectors.autoencoder import AutoencoderDetector
from trainer.detectors.base import Detector
from trainer.detectors.ensemble import EnsembleDetector, VotingEnsembleDetector
from trainer.detectors.gaussian_mixture import GaussianMixtureDetector
from trainer.detectors.isolation_forest import IsolationForestDetector
from trainer.detectors.local_outlier_factor import LocalOutlierFactorDetector
from trainer.detectors.lstm_autoencoder import LstmAutoencoderDetector
from trainer.detectors.one_class_svm import OneClassSVMDetector
from trainer.detectors.online import OnlineDetector
from trainer.detectors.pca import PCADetector
from trainer.detectors.zscore import ZScoreDetector
from trainer.features import DEFAULT_FEATURES

DETECTORS: dict[str, Callable[[], Detector]] = {
    AutoencoderDetector.name: AutoencoderDetector,
    EnsembleDetector.name: EnsembleDetector,
    VotingEnsembleDetector.name: VotingEnsembleDetector,
    GaussianMixtureDetector.name: GaussianMixtureDetector,
    IsolationForestDetector.name: IsolationForestDetector,
    LocalOutlierFactorDetector.name: LocalOutlierFactorDetector,
    LstmAutoencoderDetector.name: LstmAutoencoderDetector,
    OneClassSVMDetector.name: OneClassSVMDetector,
    OnlineDetector.name: OnlineDetector,
    PCADetector.name: PCADetector,
    ZScoreDetector.name: ZScoreDetector,
}
# Chosen with its stream settings by scripts/choose_defaults.py (docs/detection.md).
DEFAULT_ALGORITHM = OnlineDetector.name


@dataclass(frozen=True)
class Settings:
    """What a detector is trained with unless told otherwise."""

    window: int
    features: tuple[str, ...]
    threshold_factor: float


def default_settings(name: str) -> Settings:
    """A detector's own defaults (class attributes `default_window`, `default_features`,
    `threshold_factor`), else window 10, the default features and the plain quantile."""
    cls = DETECTORS.get(name)
    return Settings(
        window=getattr(cls, "default_window", 10),
        features=tuple(getattr(cls, "default_features", DEFAULT_FEATURES)),
        threshold_factor=getattr(cls, "threshold_factor", 1.0),
    )


ENSEMBLES = (EnsembleDetector.name, VotingEnsembleDetector.name)


Param = float | int | str | bool | None


def make_detector(
    name: str, members: list[str] | None = None, params: Mapping[str, Param] | None = None
) -> Detector:
    """A fresh detector; `members` chooses an ensemble's detectors (two or more, none of them
    an ensemble); `params` sets a plain detector's own options (say `n_estimators` of the
    isolation forest), checked against the names its constructor takes."""
    if name not in DETECTORS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {sorted(DETECTORS)}")
    if params:
        if name in ENSEMBLES:
            raise ValueError(f"{name} takes no detector options (got {sorted(params)})")
        accepted = detector_options(name)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"{name} has no option(s) {unknown}; its options are {accepted}")
        return DETECTORS[name](**params)
    if members is None:
        return DETECTORS[name]()
    if name not in ENSEMBLES:
        raise ValueError(f"members are chosen for {' and '.join(ENSEMBLES)} only, not {name!r}")
    plain = sorted(n for n in set(DETECTORS) - set(ENSEMBLES) if not is_sequence_detector(n))
    bad = [m for m in members if m not in plain]
    if bad or len(members) < 2:
        raise ValueError(f"ensemble members {members}: choose two or more of {plain}")
    if len(set(members)) != len(members):
        raise ValueError(f"ensemble members {members} repeat: a repeated member would count twice")
    combine = "vote" if name == VotingEnsembleDetector.name else "mean"
    return EnsembleDetector(combine=combine, members=tuple(members), name=name)


def is_sequence_detector(name: str) -> bool:
    """Whether `name` reads windows as sequences (it cannot join an ensemble of feature
    detectors, and it needs consecutive rows)."""
    return bool(getattr(DETECTORS.get(name), "sequence", False))


def detector_options(name: str) -> list[str]:
    """The keyword options a plain detector's constructor takes (its tunable parameters)."""
    return list(_defaults(name))


def chosen_options(name: str, params: Mapping[str, Param]) -> dict[str, Param]:
    """Of a manifest's recorded parameters, the options set away from their defaults: what
    recreates the detector (a loaded model refits as it was fitted)."""
    if name in ENSEMBLES or name not in DETECTORS:
        return {}
    defaults = _defaults(name)
    return {k: v for k, v in params.items() if k in defaults and v != defaults[k]}


def _defaults(name: str) -> dict[str, object]:
    signature = inspect.signature(DETECTORS[name])
    return {p.name: p.default for p in signature.parameters.values() if p.name != "self"}
