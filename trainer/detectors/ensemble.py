"""Ensembles: several detectors, each calibrated on its own training scores, combined in one
graph — by the mean of their calibrated scores, or by vote (how many flag the window, with the
mean breaking ties), as in the tutorials.

Members fit on the same features; each member's calibration puts `member_contamination` of its
training windows above 0.5, so a vote means "this member would have alerted". The ensemble's
raw score is then calibrated once more, like any detector's. Its contributions are the mean of
the members' contributions, each first made into shares of 1 so that no member's units weigh
more than another's.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from onnx import TensorProto

from trainer.calibration import ALERT_THRESHOLD, Calibration
from trainer.detectors.base import Detector, attribution, onnx_attribution
from trainer.graph import GraphBuilder

DEFAULT_MEMBERS = ("pca", "gaussian_mixture")
_EPS = 1e-12


def _shares(a: np.ndarray) -> np.ndarray:
    return a / (a.sum(axis=1, keepdims=True) + _EPS)


class EnsembleDetector:
    name = "ensemble"

    def __init__(
        self,
        combine: Literal["mean", "vote"] = "mean",
        members: tuple[str, ...] = DEFAULT_MEMBERS,
        member_contamination: float = 0.01,
        name: str = "ensemble",
    ) -> None:
        self.name = name
        self.combine = combine
        self.member_names = members
        self.member_contamination = member_contamination
        self._members: list[tuple[Detector, Calibration]] = []

    def params(self) -> dict[str, float | int | str | bool | None]:
        return {
            "combine": self.combine,
            "members": ",".join(self.member_names),
            "member_contamination": self.member_contamination,
        }

    def fit(self, features: np.ndarray, seed: int) -> None:
        # The registry imports this module.
        from trainer.detectors import default_settings, make_detector

        self._members = []
        for name in self.member_names:
            member = make_detector(name)
            member.fit(features, seed)
            raw = member.reference_scores(features)
            factor = default_settings(name).threshold_factor  # calibrated as it would be alone
            calibration = Calibration.fit(raw, self.member_contamination, factor)
            self._members.append((member, calibration))

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        calibrated = np.stack(
            [cal.apply(m.reference_scores(features)) for m, cal in self._fitted()], axis=1
        )
        mean = calibrated.mean(axis=1)
        if self.combine == "mean":
            return mean
        votes = (calibrated >= ALERT_THRESHOLD).sum(axis=1)
        return votes + mean / (len(self._members) + 1)

    def onnx_scores(self, g: GraphBuilder, features: str) -> str:
        members = self._fitted()
        calibrated = [cal.onnx(g, m.onnx_scores(g, features)) for m, cal in members]
        n = len(members)
        mean = g.op("Mul", g.op("Sum", *calibrated), g.const(1.0 / n, "ens_inv_n"))
        if self.combine == "mean":
            return mean
        half = g.const(ALERT_THRESHOLD, "ens_half")
        votes = [
            g.op("Cast", g.op("GreaterOrEqual", c, half), to=TensorProto.FLOAT) for c in calibrated
        ]
        return g.op("Add", g.op("Sum", *votes), g.op("Mul", mean, g.const(1.0 / (n + 1), "tie")))

    def reference_attribution(self, features: np.ndarray) -> np.ndarray:
        shares = [_shares(attribution(m, features)) for m, _ in self._fitted()]
        return np.mean(shares, axis=0)

    def onnx_attribution(self, g: GraphBuilder, features: str) -> str:
        members = self._fitted()
        axis = g.const([1], "ax", np.int64)
        shares = []
        for m, _ in members:
            a = onnx_attribution(m, g, features)
            total = g.op(
                "Add", g.op("ReduceSum", a, axis, keepdims=1), g.const(_EPS, "eps", np.float64)
            )
            shares.append(g.op("Div", a, total))
        return g.op(
            "Mul", g.op("Sum", *shares), g.const(1.0 / len(members), "ens_inv_n", np.float64)
        )

    def _fitted(self) -> list[tuple[Detector, Calibration]]:
        if not self._members:
            raise RuntimeError("fit the detector first")
        return self._members


class VotingEnsembleDetector(EnsembleDetector):
    name = "ensemble_vote"

    def __init__(self) -> None:
        super().__init__(combine="vote", name="ensemble_vote")
