"""The detector registry: one name, one class, one interface (`base.Detector`)."""

from __future__ import annotations

from collections.abc import Callable

from trainer.detectors.base import Detector
from trainer.detectors.isolation_forest import IsolationForestDetector
from trainer.detectors.pca import PCADetector

DETECTORS: dict[str, Callable[[], Detector]] = {
    IsolationForestDetector.name: IsolationForestDetector,
    PCADetector.name: PCADetector,
}


def make_detector(name: str) -> Detector:
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose from {sorted(DETECTORS)}") from None
