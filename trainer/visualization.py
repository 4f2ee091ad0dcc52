"""`AnomalyVisualizer`: the HTML report's pictures for a detector fitted in a notebook.

`edge-trainer report` draws sensors with flagged rows, the score against the level lines, the
score histogram, what drove the top alerts and, with labels, the confusion matrix and the
precision-recall curve. The visualizer scores rows with a fitted `AnomalyDetector` (its ONNX
graph, as the gateway would) and returns the same matplotlib figures, drawn off-screen (no
pyplot, no display needed), to show in a notebook or save as PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from agent.atomic import write_atomically
from trainer import report
from trainer.api import AnomalyDetector, ArrayLike, _readings, score_rows


class AnomalyVisualizer:
    """Pictures of what `detector` sees in rows X (consecutive readings, one column per
    sensor; a DataFrame's columns are matched by name). `labels` (0/1, 1 = anomaly) add the
    labelled stretches and the figures that need them."""

    def __init__(self, detector: AnomalyDetector, top: int = 5) -> None:
        self.detector = detector
        self.top = top

    def scored(self, X: ArrayLike, labels: ArrayLike | None = None) -> report.Scored:
        manifest = self.detector.manifest
        values = _readings(X, manifest.sensor_names)[0]
        score, contributions = score_rows(self.detector._fitted(), values)
        y = None
        if labels is not None:
            y = np.asarray(labels).astype(bool)
            if y.shape != (len(values),):
                raise ValueError(f"{len(values)} rows but labels of shape {y.shape}")
        return report.Scored(
            manifest=manifest,
            source="notebook",
            x=np.arange(len(values)),
            x_label="row",
            values=values,
            score=score,
            contributions=contributions,
            labels=y,
            from_row=0,
        )

    def plot_sensors(self, X: ArrayLike, labels: ArrayLike | None = None) -> Figure:
        """Each sensor over the rows, flagged rows in red, labelled stretches shaded."""
        return report.sensors_figure(self.scored(X, labels))

    def plot_scores(self, X: ArrayLike, labels: ArrayLike | None = None) -> Figure:
        """The score over the rows with the info / warning / critical lines."""
        return report.score_figure(self.scored(X, labels))

    def plot_score_histogram(self, X: ArrayLike) -> Figure:
        return report.histogram_figure(self.scored(X))

    def plot_contributions(self, X: ArrayLike) -> Figure:
        """Which sensors drove the `top` alert episodes (runs of flagged rows) at their peaks;
        fails when no row is flagged, since there is nothing to explain."""
        s = self.scored(X)
        episodes = report.top_episodes(s.score, s.flagged, 0, self.top)
        if not episodes:
            raise ValueError("no row is flagged: there are no alerts whose causes to draw")
        return report.contributions_figure(s, episodes)

    def plot_precision_recall(self, X: ArrayLike, labels: ArrayLike) -> Figure:
        s = self.scored(X, labels)
        flagged, y = s.flagged, s.labels
        operating = (
            float((flagged & y).sum() / max(int(y.sum()), 1)),
            float((flagged & y).sum() / max(int(flagged.sum()), 1)),
        )
        return report.pr_figure(y, s.score, operating)

    @staticmethod
    def save(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
        """Write the figure as PNG, atomically (a reader never sees half a picture)."""
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return write_atomically(path, buf.getvalue())
