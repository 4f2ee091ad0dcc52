"""Offline trainer: detectors fitted in Python, exported as the gateway's single ONNX file.

The tutorials' API lives here: `from trainer import AnomalyDetector, PynomalyClient`;
`trainer.data.DataLoader`, `trainer.metrics.AnomalyMetrics` and
`trainer.visualization.AnomalyVisualizer` (matplotlib) are imported from their modules.

The names are loaded on first use (PEP 562), not when the package is imported: every
`trainer.*` module imports this file first, and `edge-trainer` on a gateway install (no
`trainer` extra, so no scikit-learn or onnx) must still get as far as saying which extra to
install (trainer/entry.py, issue 17 item 2).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ loads them
    from trainer.api import AnomalyDetector as AnomalyDetector
    from trainer.api import NotFittedError as NotFittedError
    from trainer.client import NeedsHistoryError as NeedsHistoryError
    from trainer.client import PynomalyClient as PynomalyClient
    from trainer.metrics import f1_score as f1_score
    from trainer.metrics import precision_score as precision_score
    from trainer.metrics import recall_score as recall_score
    from trainer.metrics import roc_auc_score as roc_auc_score

# Each public name and the module that defines it.
_EXPORTS = {
    "AnomalyDetector": "trainer.api",
    "NotFittedError": "trainer.api",
    "NeedsHistoryError": "trainer.client",
    "PynomalyClient": "trainer.client",
    "f1_score": "trainer.metrics",
    "precision_score": "trainer.metrics",
    "recall_score": "trainer.metrics",
    "roc_auc_score": "trainer.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
