"""The detector registry: one name, one class, one interface (`base.Detector`)."""

from __future__ import annotations

from collections.abc import Callable

from trainer.detectors.autoencoder import AutoencoderDetector
from trainer.detectors.base import Detector
from trainer.detectors.ensemble import EnsembleDetector, VotingEnsembleDetector
from trainer.detectors.gaussian_mixture import GaussianMixtureDetector
from trainer.detectors.isolation_forest import IsolationForestDetector
from trainer.detectors.local_outlier_factor import LocalOutlierFactorDetector
from trainer.detectors.one_class_svm import OneClassSVMDetector
from trainer.detectors.pca import PCADetector

DETECTORS: dict[str, Callable[[], Detector]] = {
    AutoencoderDetector.name: AutoencoderDetector,
    EnsembleDetector.name: EnsembleDetector,
    VotingEnsembleDetector.name: VotingEnsembleDetector,
    GaussianMixtureDetector.name: GaussianMixtureDetector,
    IsolationForestDetector.name: IsolationForestDetector,
    LocalOutlierFactorDetector.name: LocalOutlierFactorDetector,
    OneClassSVMDetector.name: OneClassSVMDetector,
    PCADetector.name: PCADetector,
}


def make_detector(name: str) -> Detector:
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose from {sorted(DETECTORS)}") from None
