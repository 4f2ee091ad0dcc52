"""The detector whose normal model keeps learning on the gateway (#15 item 2).

Its graph is the drift-aware z-score (`zscore`) over each sensor's window mean and standard
deviation: the normal model as fitted on the training rows. The manifest carries the same
model, folded into raw feature units (`online_params`), as the stream's `online` method, and
the agent's stream (agent/model/online.py) rescores each window with it while updating its
means and variances as windows arrive, learning slowly while the asset alerts. Before any
learning the stream's score and the graph's are the same number.
"""

from __future__ import annotations

from trainer.detectors.zscore import ZScoreDetector


class OnlineDetector(ZScoreDetector):
    name = "online"
    default_window = 20
    default_features = ("mean", "std")
    threshold_factor = 3.0
