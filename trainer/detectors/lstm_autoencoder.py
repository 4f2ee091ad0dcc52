"""LSTM autoencoder: reconstructs the whole window of standardized readings, in time order,
through a code of `hidden` numbers; raw score = the squared reconstruction error summed over
sensors (each sensor's error averaged over the window), which is also what its contributions
show. Unlike the feature detectors it reads the window as a sequence (`sequence = True`: the
pipeline hands it [batch, window, sensors] rather than window features), so it learns how
readings move together over time.

Trained in numpy (`trainer.lstm`); exported as two ONNX `LSTM` nodes and a dense layer, from
the window itself (`onnx_from_window`: the scaling, the calibration and the contributions'
floor folded into the network's constants). ONNX Runtime's LSTM computes in float32 only, so
the weights are rounded to float32 once after training and the numpy reference uses the
rounded weights; the parity check then compares float32 arithmetic with float64 arithmetic on
the same network (the folded weights are rounded to float32 once more).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from trainer.calibration import Calibration
from trainer.features import SEQUENCE
from trainer.graph import GraphBuilder
from trainer.lstm import LstmLayer, SequenceAutoencoder, Training, train

f64 = np.float64


class LstmAutoencoderDetector:
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

    def reference_scores(self, features: np.ndarray) -> np.ndarray:
        return self.reference_attribution(features).sum(axis=1)

    def onnx_from_window(
        self,
        g: GraphBuilder,
        window: str,
        mean: np.ndarray,
        std: np.ndarray,
        cal: Calibration,
        floor: float,
    ) -> tuple[str, str]:
        """(the calibrated logit [batch], each sensor's term plus `floor` [batch, sensors]) from
        the float64 window [batch, steps, sensors] and the scaler's `mean` and `std`.

        ONNX Runtime charges about 0.3 µs a node whatever it does (issue 15), so what would be
        nodes rides on constants the graph has anyway (`_scaled_input`): the error comes out
        as k (standardized − reconstruction) with k = 1 / √(steps · s), so its sum of squares
        over the steps is each sensor's mean over them divided by the calibration's scale s,
        and the logit (raw − t) / s is one sum and one subtraction. The input's column of ones
        has an error of exactly 1 at every step (the reconstruction's column is 0): `steps`
        in the sum, taken off with the threshold, and dropped from the contributions by the
        `Gemm` that adds the floor (over s too, so the shares are the reference's)."""
        net, steps, n = self._fitted(), self._steps, len(mean)
        k = 1.0 / np.sqrt(steps * cal.scale)
        x = self._scaled_input(g, window, mean, std, k)  # [steps, batch, n + 1], time-major
        enc, dec = net.encoder, net.decoder
        # The encoder takes 1 / k and the shift back; the ones column carries its bias.
        enc_w = np.c_[enc.wx.T / k, enc.b + enc.wx.T @ net.c]
        code = _lstm(g, enc_w, enc, g.op("Cast", x, to=TensorProto.FLOAT), 1)
        pads = g.const([0, 0, 0, 0, 0, 1], "ones_pad", np.int64)
        code = g.op("Pad", code, pads, g.const(1.0, "one"))  # [1, batch, hidden + 1]
        repeated = g.op("Tile", code, g.const([steps, 1, 1], "steps", np.int64))
        decoded = _lstm(g, np.c_[dec.wx.T, dec.b], dec, repeated, 0)
        hs = g.op("Squeeze", decoded, g.const([1], "axis", np.int64))  # [steps, batch, hidden]
        dense = np.c_[k * net.v, np.zeros(len(net.v))]  # c is in the input; 0 for the ones
        y = g.op("MatMul", hs, g.const(dense, "lstm_v"))
        err = g.op("Sub", x, g.op("Cast", y, to=TensorProto.DOUBLE))
        terms = g.op("ReduceSumSquare", err, axes=[0], keepdims=0)  # [batch, n + 1]
        raw = g.op("ReduceSum", terms, g.const([1], "ax", np.int64), keepdims=0)
        z = g.op("Sub", raw, g.const(steps + cal.threshold / cal.scale, "cal_t_over_s", f64))
        per_sensor = g.op(
            "Gemm",
            terms,
            g.const(np.r_[np.eye(n), np.zeros((1, n))], "per_sensor", f64),
            g.const(np.full(n, floor / cal.scale), "attribution_floor", f64),
        )
        return z, per_sensor

    def _scaled_input(
        self, g: GraphBuilder, window: str, mean: np.ndarray, std: np.ndarray, k: float
    ) -> str:
        """[steps, batch, n + 1] float64: k (standardized − c) per sensor, c the dense layer's
        offset (taken from the window rather than added to every reconstruction), and a last
        column of ones (the encoder's bias: an LSTM's `B` input costs about 1 µs more), in one
        `MatMul` and one `Sub`, where standardizing and padding take three nodes."""
        n = len(mean)
        scale = np.zeros((n, n + 1))
        scale[np.arange(n), np.arange(n)] = k / std
        offset = np.r_[k * (mean / std + self._fitted().c), -1.0]
        x = g.op("MatMul", window, g.const(scale, "seq_scale", f64))
        x = g.op("Sub", x, g.const(offset, "seq_offset", f64))
        return g.op("Transpose", x, perm=[1, 0, 2])  # time-major, as LSTM reads it

    def _fitted(self) -> SequenceAutoencoder:
        if self._net is None:
            raise RuntimeError("fit the detector first")
        return self._net


def _lstm(g: GraphBuilder, w: np.ndarray, layer: LstmLayer, x: str, output: int) -> str:
    """One ONNX LSTM node (gates i, o, f, c as `LstmLayer` stores them) with input weights `w`
    [4 * hidden, inputs] over `x`; `output` 0 is every step's hidden state Y, 1 the last one
    Y_h (the other is not written)."""
    w_r = [g.const(w[None], "lstm_W"), g.const(layer.wh.T[None], "lstm_R")]
    outs = g.op_multi("LSTM", [x, *w_r], 2, unused=(1 - output,), hidden_size=layer.hidden)
    return outs[output]
