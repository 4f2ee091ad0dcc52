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


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from ranks (ties share their mean rank); NaN with one class."""
    y = np.asarray(labels).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = _mean_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: precision at each true positive, by falling score (ties together)."""
    y = np.asarray(labels).astype(bool)
    if not y.any():
        return float("nan")
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # The last index of each run of equal scores: a threshold takes a tie whole.
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / y.sum()
    return float(np.sum(precision * recall_step))


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for a, b in zip(starts, ends, strict=True):
        if b - a > 1:
            ranks[order[a:b]] = (a + 1 + b) / 2
    return ranks
