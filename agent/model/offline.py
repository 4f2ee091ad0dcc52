"""Offline scoring of a CSV through the agent's own window, score and stream stages."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from agent.model.score import Scorer
from agent.model.stream import Stream
from agent.model.table import Table
from agent.window import Windows

_ASSET = "csv"


def score_table(scorer: Scorer, table: Table, batch_max: int = 1024) -> Iterator[float | None]:
    """One score per row, None before the window has filled, in micro-batches like the agent:
    the model's streaming layer runs over the rows in order, as for one asset on the gateway.

    The sensor columns are read (and a missing one reported) before the first score is asked for.
    """
    values = table.matrix(scorer.manifest.sensor_names)
    return _scores(scorer, values, batch_max)


def _scores(scorer: Scorer, values: np.ndarray, batch_max: int) -> Iterator[float | None]:
    # Rows go through `Windows.extend`, the live pipeline's path, a block at a time; the
    # windows are scored in batches of `batch_max`, as they were when rows went one by one.
    manifest = scorer.manifest
    windows = Windows(manifest.window, len(manifest.sensors))
    stream = Stream(manifest.stream, manifest.window, len(manifest.sensors))
    state = stream.new_state()

    def adapted(batch: list[np.ndarray]) -> list[float]:
        stacked = np.stack(batch)
        return stream.step(state, scorer.score(stacked).score, stacked).tolist()

    pending: list[np.ndarray] = []
    for start in range(0, len(values), batch_max):
        block = values[start : start + batch_max]
        ts = np.arange(start, start + len(block), dtype=np.float64)
        complete, first = windows.extend(_ASSET, ts, block, seen_at=0.0)
        yield from [None] * first
        for window in complete:
            pending.append(window)
            if len(pending) == batch_max:
                yield from adapted(pending)
                pending.clear()
    if pending:
        yield from adapted(pending)
