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
    precision, recall, _ = precision_recall_curve(y, scores)
    return float(np.sum(precision * np.diff(np.r_[0.0, recall])))


def precision_recall_curve(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, threshold) for flagging every score >= each distinct score, from
    the highest threshold down; a tie is taken whole, as a threshold would take it."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last]
    return tp / (last + 1), tp / max(int(y.sum()), 1), s[last]


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


# The tutorials' helpers, named as scikit-learn names them. Flags are 0/1 (or bool) with 1 an
# anomaly, like the data's label columns; `predict`'s 1/-1 is refused rather than guessed at,
# since its 1 means normal.


def precision_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of flagged rows that are anomalies."""
    return classification_metrics(*_flags(y_true, y_pred))["precision"]


def recall_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of anomalies flagged."""
    return classification_metrics(*_flags(y_true, y_pred))["recall"]


def f1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """2·TP / (2·TP + FP + FN), the same F1 as SKAB's TP / (TP + (FN + FP) / 2)."""
    return classification_metrics(*_flags(y_true, y_pred))["f1"]


def roc_auc_score(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of scores where higher is more anomalous (`AnomalyDetector.score`)."""
    y, _ = _flags(y_true, np.zeros(len(np.asarray(y_true))))
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"{len(y)} labels but scores of shape {s.shape}")
    return roc_auc(y, s)


def _flags(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for name, a in (("y_true", y_true), ("y_pred", y_pred)):
        v = np.asarray(a)
        if v.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {v.shape}")
        if not np.isin(v, (0, 1)).all():
            hint = "; for predict()'s output pass predict(X) == -1" if (v == -1).any() else ""
            raise ValueError(f"{name} must hold 0/1 flags (1 = anomaly){hint}")
        out.append(v.astype(bool))
    if len(out[0]) != len(out[1]):
        raise ValueError(f"y_true has {len(out[0])} rows, y_pred {len(out[1])}")
    return out[0], out[1]


class AnomalyMetrics:
    """Every figure `edge-trainer evaluate` prints, for labels and a detector's output.

    `flags` are 0/1 (or bool) with 1 an anomaly, like the labels; for `predict`'s 1/-1 use
    `from_predict` (an array of ones means "all normal" there and "all anomalies" here, so the
    two are never guessed at). `scores` are higher for more anomalous rows
    (`AnomalyDetector.score`) and give the AUCs.

    >>> m = AnomalyMetrics.from_predict([0, 0, 1, 1], [1, -1, -1, -1], scores=[0.1, 0.6, 0.7, 0.9])
    >>> m.precision, m.recall, m.roc_auc
    (0.6666666666666666, 1.0, 1.0)
    """

    def __init__(
        self, labels: np.ndarray, flags: np.ndarray, scores: np.ndarray | None = None
    ) -> None:
        y, flagged = _flags(labels, flags)
        self.counts = classification_metrics(y, flagged)
        self.roc_auc = self.pr_auc = float("nan")
        if scores is not None:
            s = np.asarray(scores, dtype=np.float64)
            if s.shape != y.shape:
                raise ValueError(f"{len(y)} labels but scores of shape {s.shape}")
            self.roc_auc, self.pr_auc = roc_auc(y, s), pr_auc(y, s)

    @classmethod
    def from_predict(
        cls, labels: np.ndarray, predicted: np.ndarray, scores: np.ndarray | None = None
    ) -> AnomalyMetrics:
        """From `predict`'s output: 1 normal, -1 anomaly."""
        p = np.asarray(predicted)
        if not np.isin(p, (1, -1)).all():
            raise ValueError("predict()'s output holds 1 (normal) and -1 (anomaly) only")
        return cls(labels, p == -1, scores)

    @property
    def precision(self) -> float:
        return self.counts["precision"]

    @property
    def recall(self) -> float:
        return self.counts["recall"]

    @property
    def f1(self) -> float:
        return self.counts["f1"]

    def report(self) -> dict[str, float | None]:
        """The figures as `edge-trainer evaluate` names them (an undefined AUC is None)."""
        auc = {"roc_auc": self.roc_auc, "pr_auc": self.pr_auc}
        return {**self.counts, **{k: None if np.isnan(v) else v for k, v in auc.items()}}
