"""Judge an exported model on labelled data, through the agent's own scoring path.

The model is scored exactly as the gateway would score it (`agent.model.offline`), a row is flagged
when its score reaches the model's alert threshold, and rows before the window has filled
count as unflagged with score 0. `from_row` leaves out a training stretch at the start (SKAB's
protocol trains on the first rows of each file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.model.offline import score_table
from agent.model.score import Scorer
from agent.model.table import Table, TableError, read_table
from trainer.metrics import classification_metrics, pr_auc, roc_auc


def evaluate(model: Path, data: Path, label_column: str, from_row: int = 0) -> dict[str, float]:
    """`precision`, `recall`, `f1`, `roc_auc`, `pr_auc`, `far`, `mar` (both %), `n`, and the
    `threshold` used, over rows `from_row` onwards."""
    scorer, table = open_scored(model, data, label_column, from_row)
    labels = table.labels(label_column)[from_row:]
    scores = np.array([s or 0.0 for s in score_table(scorer, table)])[from_row:]
    metrics = score_metrics(labels, scores, scorer.manifest.alert_threshold)
    metrics["threshold"] = scorer.manifest.alert_threshold
    out = {k: round(v, 6) for k, v in metrics.items()}
    out["n"] = int(metrics["n"])
    return out


def open_scored(
    model: Path, data: Path, label_column: str | None, from_row: int
) -> tuple[Scorer, Table]:
    """The model and the data it is to be judged on, refused early with the reason when the
    label column is missing, the data is shorter than a window or `from_row` is outside it."""
    scorer = Scorer.load(model)
    table = read_table(data)
    if label_column is not None and label_column not in table.text:
        raise TableError(f"{data}: no label column {label_column!r}; columns are {table.header}")
    if table.rows < scorer.manifest.window:
        raise TableError(
            f"{data}: {table.rows} row(s) are fewer than the model's window of "
            f"{scorer.manifest.window}: nothing to score"
        )
    if not 0 <= from_row < table.rows:
        raise TableError(f"{data}: --from-row {from_row} is outside its {table.rows} rows")
    return scorer, table


def score_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """The classification metrics of flagging at `threshold`, and the rank metrics."""
    metrics = classification_metrics(labels, scores >= threshold)
    metrics["roc_auc"] = roc_auc(labels, scores)
    metrics["pr_auc"] = pr_auc(labels, scores)
    return metrics
