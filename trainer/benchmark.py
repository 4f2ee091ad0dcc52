"""SKAB's published outlier-detection protocol, run on our detectors through the agent's path.

For each labelled file: train on its first `train_rows` rows only (labels never used), export,
score the whole file as the gateway would (the stream layer included), and read the product's
alerts as SKAB's 0/1 per row on the rows after the training stretch: a row is anomalous while an
alert episode is open (trainer.readout, the reading `evaluate`'s `episodes` gives for one file);
one confusion matrix is pooled over all files. F1 flatters a detector that flags
everything when most test rows are anomalies, so FAR and MAR stand beside it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.model.offline import score_table
from agent.model.score import Scorer
from agent.model.table import TableError, read_table
from trainer.metrics import classification_metrics
from trainer.readout import skab_flags
from trainer.train import TrainOptions, train, write_model

# SKAB's README (commit b2c0d46), outlier detection on its 34 files: F1, FAR %, MAR %.
PUBLISHED = {
    "Conv-AE": (0.78, 13.55, 28.02),
    "MSET": (0.78, 39.73, 14.13),
    "T-squared+Q (PCA)": (0.76, 26.62, 24.92),
    "LSTM-AE": (0.74, 29.96, 25.92),
    "Isolation forest": (0.29, 2.56, 82.89),
}
OURS_BESIDE = {"pca": "T-squared+Q (PCA)", "isolation_forest": "Isolation forest"}


@dataclass
class Pooled:
    labels: list[np.ndarray]
    flagged: list[np.ndarray]

    def metrics(self) -> dict[str, float]:
        return classification_metrics(np.concatenate(self.labels), np.concatenate(self.flagged))


def labelled_files(folder: Path) -> list[Path]:
    """Every CSV under `folder` with an `anomaly` column, in a stable order."""
    files = []
    for path in sorted(folder.rglob("*.csv")):
        try:
            header = read_table(path).header
        except TableError:
            continue
        if "anomaly" in header:
            files.append(path)
    if not files:
        raise TableError(f"{folder}: no CSV file with an 'anomaly' column")
    return files


def run(
    folder: Path, algorithms: list[str], train_rows: int = 400, window: int | None = None
) -> dict[str, dict[str, float]]:
    files = labelled_files(folder)
    pooled = {a: Pooled([], []) for a in algorithms}
    with tempfile.TemporaryDirectory(prefix="skab-") as tmp:
        for path in files:
            table = read_table(path)
            labels = table.labels("anomaly")[train_rows:]
            for algorithm in algorithms:
                options = TrainOptions(
                    algorithm=algorithm,
                    train_rows=train_rows,
                    label_column="anomaly",
                    window=window,
                    model_id=f"skab-{algorithm}",
                )
                model = write_model(train(path, options), Path(tmp) / f"{algorithm}.onnx")
                scorer = Scorer.load(model)
                scores = np.array([s or 0.0 for s in score_table(scorer, table)])
                flags = skab_flags(scores, scorer.manifest.alert_threshold)[train_rows:]
                pooled[algorithm].labels.append(labels)
                pooled[algorithm].flagged.append(flags)
    out = {a: {**p.metrics(), "files": len(files)} for a, p in pooled.items()}
    return out


def render(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'detector':<28} {'F1':>5} {'FAR %':>7} {'MAR %':>7}  files"]
    for algorithm, m in results.items():
        lines.append(
            f"{'ours: ' + algorithm:<28} {m['f1']:>5.2f} {m['far']:>7.2f} {m['mar']:>7.2f}  "
            f"{m['files']:.0f}"
        )
    lines.append("published (SKAB README, 34 files):")
    for name, (f1, far, mar) in PUBLISHED.items():
        lines.append(f"{'  ' + name:<28} {f1:>5.2f} {far:>7.2f} {mar:>7.2f}")
    return "\n".join(lines)
