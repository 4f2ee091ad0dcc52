"""Offline trainer: detectors fitted in Python, exported as the gateway's single ONNX file.

The tutorials' API lives here: `from trainer import AnomalyDetector, PynomalyClient`;
`trainer.data.DataLoader`, `trainer.metrics.AnomalyMetrics` and
`trainer.visualization.AnomalyVisualizer` (matplotlib) are imported from their modules.
"""

from trainer.api import AnomalyDetector, NotFittedError
from trainer.client import NeedsHistoryError, PynomalyClient
from trainer.metrics import f1_score, precision_score, recall_score, roc_auc_score

__all__ = [
    "AnomalyDetector",
    "NeedsHistoryError",
    "NotFittedError",
    "PynomalyClient",
    "f1_score",
    "precision_score",
    "recall_score",
    "roc_auc_score",
]
