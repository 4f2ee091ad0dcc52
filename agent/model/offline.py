"""Offline scoring of a CSV through the agent's own window, score and stream stages.

Each row gets two scores: the model graph's own (`graph`, the window taken alone) and the
streaming layer's over it (`score`, what the agent alerts on). `edge-agent score` prints both;
the trainer's benchmarks read `score` as the product's alerts (trainer.readout).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from agent.model.score import Scorer
from agent.model.stream import Stream
from agent.model.table import Table
from agent.window import Windows

_ASSET = "csv"


@dataclass(frozen=True)
class RowScore:
    graph: float  # the model's score of the window ending at the row, before the stream layer
    score: float  # after the stream layer: what the agent compares with the alert threshold


def score_table(scorer: Scorer, table: Table, batch_max: int = 1024) -> Iterator[float | None]:
    """One score per row (after the stream layer), None before the window has filled.

    The sensor columns are read (and a missing one reported) before the first score is asked for.
    """
    rows = scored_table(scorer, table, batch_max)
    return (None if r is None else r.score for r in rows)


def scored_table(scorer: Scorer, table: Table, batch_max: int = 1024) -> Iterator[RowScore | None]:
    """Both scores per row, None before the window has filled; columns are read eagerly. The
    rows' times (the time column, when every cell is one) feed the stream's daily profile."""
    values = table.matrix(scorer.manifest.sensor_names)
    return scored_values(scorer, values, batch_max, table.times())


def scored_values(
    scorer: Scorer,
    values: np.ndarray,
    batch_max: int = 1024,
    times: np.ndarray | None = None,
) -> Iterator[RowScore | None]:
    """Both scores per row of `values` ([rows, sensors] in the manifest's order), in micro-
    batches like the agent: the stream layer runs over the rows in order, as for one asset.
    `times` (epoch seconds per row) feed the daily profile; without them it is left out."""
    values = np.asarray(values, dtype=np.float64)
    if times is not None and len(times) != len(values):
        raise ValueError(f"{len(times)} times for {len(values)} rows")
    return _scores(scorer, values, batch_max, times)


def _scores(
    scorer: Scorer, values: np.ndarray, batch_max: int, times: np.ndarray | None
) -> Iterator[RowScore | None]:
    # Rows go through `Windows.extend`, the live pipeline's path, a block at a time; the
    # windows are scored in batches of `batch_max`, as they were when rows went one by one.
    manifest = scorer.manifest
    windows = Windows(manifest.window, len(manifest.sensors))
    stream = Stream(manifest.stream, manifest.window, len(manifest.sensors))
    state = stream.new_state()

    def adapted(batch: list[np.ndarray], rows: list[int]) -> list[RowScore]:
        stacked = np.stack(batch)
        graph = scorer.score(stacked).score
        when = None if times is None else times[rows]
        after = stream.step(state, graph, stacked, when)
        return [RowScore(float(g), float(s)) for g, s in zip(graph, after, strict=True)]

    pending: list[np.ndarray] = []
    ending: list[int] = []  # the row each pending window ends at
    for start in range(0, len(values), batch_max):
        block = values[start : start + batch_max]
        ts = np.arange(start, start + len(block), dtype=np.float64)
        complete, first = windows.extend(_ASSET, ts, block, seen_at=0.0)
        yield from [None] * first
        for row, window in enumerate(complete, start=start + first):
            pending.append(window)
            ending.append(row)
            if len(pending) == batch_max:
                yield from adapted(pending, ending)
                pending.clear()
                ending.clear()
    if pending:
        yield from adapted(pending, ending)
