"""Judge an exported model on labelled data, through the agent's own scoring path.

The model is scored exactly as the gateway would score it (`agent.model.offline`, the stream
layer included). The top-level metrics are per row: a row is flagged when its score reaches the
model's alert threshold (`edge-agent score`'s `anomaly` column), and rows before the window has
filled count as unflagged with score 0. `episodes` reads the same scores as the agent's alerts
(trainer.readout, SKAB's reading: a row is anomalous while an episode is open), which is what
`edge-trainer benchmark skab` pools. `from_row` leaves out a training stretch at the start
(SKAB's protocol trains on the first rows of each file); episodes run from the first row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.model.offline import score_table
from agent.model.score import Scorer
from agent.model.table import Table, TableError, read_table
from trainer.metrics import classification_metrics, pr_auc, roc_auc
from trainer.readout import episodes


def evaluate(model: Path, data: Path, label_column: str, from_row: int = 0) -> dict[str, object]:
    """`precision`, `recall`, `f1`, `roc_auc`, `pr_auc`, `far`, `mar` (both %), `n`, the
    `threshold` used, and `episodes` (the alert reading's classification metrics and the
    number of `alerts` fired), over rows `from_row` onwards."""
    scorer, table = open_scored(model, data, label_column, from_row)
    threshold = scorer.manifest.alert_threshold
    labels = table.labels(label_column)[from_row:]
    scores = np.array([s or 0.0 for s in score_table(scorer, table)])
    metrics = score_metrics(labels, scores[from_row:], threshold)
    metrics["threshold"] = threshold
    read = episodes(scores, threshold)
    alerting = classification_metrics(labels, read.open[from_row:])
    alerting["alerts"] = int(read.fires[from_row:].sum())
    out: dict[str, object] = _rounded(metrics)
    out["episodes"] = _rounded(alerting)
    return out


def _rounded(metrics: dict[str, float]) -> dict[str, float | int]:
    out: dict[str, float | int] = {k: round(v, 6) for k, v in metrics.items()}
    for count in ("n", "alerts"):
        if count in metrics:
            out[count] = int(metrics[count])
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
