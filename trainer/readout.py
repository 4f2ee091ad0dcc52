"""How a benchmark reads the product's output: the agent's alert episodes (agent/alert.py).

The agent does not hand a score to anyone: it opens an episode after `fire_after` consecutive
windows at or above the alert threshold (a `firing` alert) and closes it after `resolve_after`
consecutive windows below it (a `resolved` alert). Each benchmark reads that output the way
its protocol defines a detector's output:

- NAB scores detections and credits only the earliest in a window: a detection is where an
  episode fires (the alert an operator receives), with the score at that window;
- SKAB scores every row as normal or anomalous: a row is anomalous while an episode is open.

`FIRE_AFTER` and `RESOLVE_AFTER` are the agent's defaults (agent/config.py; a test holds them
equal), so the benchmarks judge what a gateway with the default config sends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIRE_AFTER = 3
RESOLVE_AFTER = 10


@dataclass(frozen=True)
class Episodes:
    fires: np.ndarray  # bool [n]: an episode fires at this window
    open: np.ndarray  # bool [n]: an episode is open (fired, not yet resolved) at this window


def episodes(
    scores: np.ndarray,
    threshold: float,
    fire_after: int = FIRE_AFTER,
    resolve_after: int = RESOLVE_AFTER,
) -> Episodes:
    """The agent's episode rule (AlertTracker.update, levels aside) over one asset's scores."""
    above = (np.asarray(scores) >= threshold).tolist()
    fires = np.zeros(len(above), dtype=bool)
    opened = np.zeros(len(above), dtype=bool)
    run_above = run_below = 0
    firing = False
    for i, up in enumerate(above):
        if up:
            run_above, run_below = run_above + 1, 0
            if not firing and run_above >= fire_after:
                firing = fires[i] = True
        else:
            run_above, run_below = 0, run_below + 1
            if firing and run_below >= resolve_after:
                firing = False
        opened[i] = firing
    return Episodes(fires, opened)


def nab_detections(scores: np.ndarray, threshold: float) -> np.ndarray:
    """NAB's reading of one series' stream scores: the score where an episode fires, 0
    elsewhere (NAB then optimises its own threshold over these detections)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(episodes(scores, threshold).fires, scores, 0.0)


def skab_flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """SKAB's reading of one series' stream scores: a row is anomalous while an episode is open."""
    return episodes(scores, threshold).open
