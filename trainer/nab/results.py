"""Per-row scores written in the layout of NAB's own result files, to compare with NAB's.

Layout as NAB's `results/` folder: `<dir>/<detector>/<category>/<detector>_<file>.csv` with the
columns timestamp, value, anomaly_score, label (1 inside a labelled window).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from trainer.nab.corpus import Corpus


def write_results(out: Path, corpus: Corpus, detector: str, scores: dict[str, np.ndarray]) -> None:
    for name, series in corpus.series.items():
        category, file = name.split("/", 1)
        path = out / detector / category / f"{detector}_{file}"
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = (corpus.scoring.layouts[name].window_of >= 0).astype(int).tolist()
        rows = zip(
            series.table.timestamps(),
            series.values.tolist(),
            scores[name].tolist(),
            labels,
            strict=True,
        )
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value", "anomaly_score", "label"])
            writer.writerows((t, repr(v), repr(s), k) for t, v, s, k in rows)
