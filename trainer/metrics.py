"""Detection metrics on 0/1 labels, with SKAB's false- and missed-alarm rates beside F1."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """precision, recall, f1, far and mar (both in %), and n, from 0/1 arrays of equal length."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predicted).astype(bool)
    tp = float(np.sum(y & p))
    fp = float(np.sum(~y & p))
    fn = float(np.sum(y & ~p))
    tn = float(np.sum(~y & ~p))
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": tp / (tp + (fn + fp) / 2) if tp + fn + fp else 0.0,
        "far": 100.0 * fp / (fp + tn) if fp + tn else 0.0,
        "mar": 100.0 * fn / (fn + tp) if fn + tp else 0.0,
        "n": float(len(y)),
    }
