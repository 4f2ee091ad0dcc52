"""`DataLoader`: the tutorials' way to read a CSV, through the trainer's own reader.

`edge-trainer train` and `edge-agent score` read files with `agent.model.table` (separator
sniffed, time column found, numeric columns as sensors, a bad cell named by column and row);
the loader gives notebooks the same reading, so what a notebook trains on is what the command
line would have trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.model.table import LABEL_COLUMNS, read_table


@dataclass(frozen=True)
class Dataset:
    """A file's readings: `X` [rows, sensors] in `sensors` order, 0/1 `labels` when the file
    has a label column, and the time column's text (row numbers when it has none)."""

    X: np.ndarray
    sensors: list[str]
    labels: np.ndarray | None
    timestamps: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.X)

    def split(self, train_fraction: float = 0.8) -> tuple[Dataset, Dataset]:
        """(first part, rest) in time order: a detector is judged on what came after its
        training stretch, never on rows shuffled in from it."""
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        cut = int(len(self.X) * train_fraction)
        return self._rows(slice(0, cut)), self._rows(slice(cut, None))

    def to_frame(self) -> Any:
        """A pandas DataFrame: the time column (as datetimes when they parse), the sensors and
        the labels (pandas is the `dev` extra's; the trainer itself does not need it)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Dataset.to_frame needs pandas: pip install pandas") from None
        frame = pd.DataFrame(self.X, columns=self.sensors)
        times = pd.to_datetime(pd.Series(self.timestamps), errors="coerce")
        frame.insert(0, "timestamp", times if times.notna().all() else self.timestamps)
        if self.labels is not None:
            frame["label"] = self.labels
        return frame

    def _rows(self, rows: slice) -> Dataset:
        labels = None if self.labels is None else self.labels[rows]
        return Dataset(self.X[rows], self.sensors, labels, self.timestamps[rows], self.source)


class DataLoader:
    """Reads sensor CSVs as `edge-trainer` does.

    `label_column` (default: the first of `anomaly`, `changepoint` the file has) becomes
    `labels` and is kept out of the sensors; `sensors` chooses columns (default every numeric
    column but the time and label columns).
    """

    def __init__(self, label_column: str | None = None) -> None:
        self.label_column = label_column

    def load_csv(self, path: str | Path, sensors: list[str] | None = None) -> Dataset:
        table = read_table(path)
        label = self.label_column or next((c for c in LABEL_COLUMNS if c in table.header), None)
        if self.label_column and self.label_column not in table.header:
            raise ValueError(f"{path}: no label column {label!r}; columns are {table.header}")
        chosen = list(sensors) if sensors is not None else table.sensor_columns(label)
        if not chosen:
            raise ValueError(f"{path}: no numeric sensor columns (columns: {table.header})")
        if label in chosen:
            raise ValueError(f"label column {label!r} cannot also be a sensor")
        return Dataset(
            X=table.matrix(chosen),
            sensors=chosen,
            labels=table.labels(label) if label else None,
            timestamps=table.timestamps(),
            source=str(path),
        )
