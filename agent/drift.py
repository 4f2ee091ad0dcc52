"""Drift reporting (#15): how far each asset's recent raw scores have moved from what the model
saw in training (`Stream.drift`, in [0, 1]), told to operators so that a stale model shows
before it floods them with alerts.

The metrics carry one gauge per asset (at most `ingest.max_assets` of them); the retained
status, which every fleet watcher receives, only a summary of fixed size whatever the number of
assets: how many report drift, how many are at or above `alerts.drift_level`, and the few that
moved most.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

STATUS_MOST = 5  # assets named in the status, the most drifted first


def summary(
    drifts: Mapping[str, float], level: float, most: int = STATUS_MOST
) -> dict[str, object]:
    """The status's `drift` object: `assets` reporting drift, how many are `above` `level`,
    and the `most` drifted (ties by name, so that the retained message changes only when the
    figures do)."""
    top = heapq.nsmallest(most, drifts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "level": level,
        "assets": len(drifts),
        "above": sum(1 for d in drifts.values() if d >= level),
        "most": [{"asset": asset, "drift": round(d, 4)} for asset, d in top],
    }
