"""Offline trainer: detectors fitted in Python, exported as the gateway's single ONNX file.

The tutorials' API lives here: `from trainer import AnomalyDetector, f1_score`.
"""

from trainer.api import AnomalyDetector, NotFittedError
from trainer.metrics import f1_score, precision_score, recall_score, roc_auc_score

__all__ = [
    "AnomalyDetector",
    "NotFittedError",
    "f1_score",
    "precision_score",
    "recall_score",
    "roc_auc_score",
]
