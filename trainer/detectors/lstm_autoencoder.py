"""LSTM autoencoder: reconstructs the whole window of standardized readings, in time order,
through a code of `hidden` numbers; raw score = the squared reconstruction error summed over
sensors (each sensor's error averaged over the window), which is also what its contributions
show. Unlike the feature detectors it reads the window as a sequence (`sequence = True`: the
pipeline hands it [batch, window, sensors] rather than window features), so it learns how
readings move together over time.

Trained in numpy (`trainer.lstm`); exported as two ONNX `LSTM` nodes and a dense layer. ONNX
Runtime's LSTM computes in float32 only, so the weights are rounded to float32 once after
training and the numpy reference uses the rounded weights; the parity check then compares
float32 arithmetic with float64 arithmetic on the same network.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from trainer.detectors.base import AdditiveScore
from trainer.features import SEQUENCE
from trainer.graph import GraphBuilder
from trainer.lstm import LstmLayer, SequenceAutoencoder, Training, train


class LstmAutoencoderDetector(AdditiveScore):
    name = "lstm_autoencoder"
    sequence = True
    default_window = 10
    default_features = (SEQUENCE,)

    def __init__(
        self,
        hidden: int | None = None,
        epochs: int = 30,
        learning_rate: float = 0.01,
        batch_size: int = 64,
        max_train: int = 4096,
    ) -> None:
        self.hidden = hidden  # default: as many units as sensors, between 4 and 16
        self.training = Training(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
        self.max_train = max_train  # windows sampled for training (seeded); all are scored
        self._net: SequenceAutoencoder | None = None
        self._final_loss: float | None = None
        self._steps = 0  # the window's length, fixed at fit: the decoder runs that many steps

    def params(self) -> dict[str, float | int | str | bool | None]:
        return {
            "hidden": None if self._net is None else self._net.encoder.hidden,
            "epochs": self.training.epochs,
            "learning_rate": self.training.learning_rate,
            "batch_size": self.training.batch_size,
            "max_train": self.max_train,
            "final_loss": self._final_loss,
        }

    def fit(self, features: np.ndarray, seed: int) -> None:
        if features.ndim != 3 or features.shape[1] < 2:
            raise ValueError("lstm_autoencoder reads windows of 2 or more readings (--window)")
        rng = np.random.default_rng(seed)
        x = features.astype(np.float64)
        if len(x) > self.max_train:
            x = x[np.sort(rng.choice(len(x), self.max_train, replace=False))]
        n = x.shape[2]
        hidden = self.hidden or min(16, max(4, n))
        net = SequenceAutoencoder.init(n, hidden, rng)
        losses = train(net, x, self.training, rng)
        self._final_loss = round(losses[-1], 6)
        self._steps = x.shape[1]
        self._net = net.rounded(np.float32)

    def reference_attribution(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float64)
        err = x - self._fitted().reconstruct(x)
        return (err * err).mean(axis=1)

    def _onnx_attribution(self, g: GraphBuilder, features: str) -> str:
        # Time-major once, [steps, batch, sensors]: the LSTM reads it, and the error is taken
        # in it (no transpose back). A node costs about 0.3 µs whatever it does (issue 15).
        net = self._fitted()
        x = g.op("Transpose", features, perm=[1, 0, 2])
        code = _lstm(g, net.encoder, _ones_column(g, g.op("Cast", x, to=TensorProto.FLOAT)), 1)
        steps = g.const([self._steps, 1, 1], "steps", np.int64)  # [1, b, h] → [steps, b, h]
        decoded = _lstm(g, net.decoder, g.op("Expand", _ones_column(g, code), steps), 0)
        hs = g.op("Squeeze", decoded, g.const([1], "axis", np.int64))  # [steps, batch, hidden]
        y = g.op("Add", g.op("MatMul", hs, g.const(net.v, "lstm_v")), g.const(net.c, "lstm_c"))
        err = g.op("Sub", x, g.op("Cast", y, to=TensorProto.DOUBLE))
        return g.op("ReduceMean", g.op("Mul", err, err), axes=[0], keepdims=0)

    def _fitted(self) -> SequenceAutoencoder:
        if self._net is None:
            raise RuntimeError("fit the detector first")
        return self._net


def _lstm(g: GraphBuilder, layer: LstmLayer, x: str, output: int) -> str:
    """One ONNX LSTM node (gates i, o, f, c as `LstmLayer` stores them) over `x` with a last
    column of ones; `output` 0 is every step's hidden state Y, 1 the last one Y_h (the other
    is not written).

    The bias rides on that column of ones (the last column of W) rather than on the `B`
    input: ONNX Runtime's LSTM takes about 1 µs longer per node with `B` than the `Pad` that
    appends the ones costs. The same sums, in another order (float32 rounding)."""
    w = g.const(np.c_[layer.wx.T, layer.b][None], "lstm_W")
    r = g.const(layer.wh.T[None], "lstm_R")
    outs = g.op_multi("LSTM", [x, w, r], 2, unused=(1 - output,), hidden_size=layer.hidden)
    return outs[output]


def _ones_column(g: GraphBuilder, x: str) -> str:
    """[steps, batch, n] → [steps, batch, n + 1], the last column 1 (the bias's input)."""
    pads = g.const([0, 0, 0, 0, 0, 1], "ones_pad", np.int64)
    return g.op("Pad", x, pads, g.const(1.0, "one", np.float32))
