"""A small LSTM sequence autoencoder in numpy: forward pass, backpropagation through time, Adam.

Why numpy: the network is small (one encoder and one decoder layer of a few dozen units over
windows of tens of readings), so numpy trains it in seconds on a gateway-class CPU, and the
trainer gains no dependency (torch's CPU wheel is ~200 MB, JAX's ~620 MB installed) for one
detector. Gradients are checked against finite differences in the tests.

Gates are stored in ONNX's order (input, output, forget, cell) and as ONNX computes them
(no peepholes, sigmoid / tanh / tanh), so the exported `LSTM` nodes take the weights as they
are: ONNX's W is `wx.T`, R is `wh.T`, B is `b` followed by zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z), without overflow


@dataclass
class LstmLayer:
    wx: np.ndarray  # [inputs, 4 * hidden]
    wh: np.ndarray  # [hidden, 4 * hidden]
    b: np.ndarray  # [4 * hidden]

    @classmethod
    def init(cls, inputs: int, hidden: int, rng: np.random.Generator) -> LstmLayer:
        bound = 1.0 / np.sqrt(hidden)
        b = np.zeros(4 * hidden)
        b[2 * hidden : 3 * hidden] = 1.0  # forget gate open at first: gradients reach back
        return cls(
            rng.uniform(-bound, bound, (inputs, 4 * hidden)),
            rng.uniform(-bound, bound, (hidden, 4 * hidden)),
            b,
        )

    @property
    def hidden(self) -> int:
        return self.wh.shape[0]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
        """x [steps, batch, inputs] → hidden states [steps, batch, hidden], and what the
        backward pass needs."""
        hid = self.hidden
        h = np.zeros((x.shape[1], hid))
        c = np.zeros_like(h)
        hs, cache = [], []
        for xt in x:
            z = xt @ self.wx + h @ self.wh + self.b
            i, o, f = (_sigmoid(z[:, k * hid : (k + 1) * hid]) for k in range(3))
            g = np.tanh(z[:, 3 * hid :])
            c_new = f * c + i * g
            tc = np.tanh(c_new)
            cache.append((xt, h, c, i, o, f, g, tc))
            h, c = o * tc, c_new
            hs.append(h)
        return np.stack(hs), cache

    def backward(
        self, cache: list[tuple[np.ndarray, ...]], dhs: np.ndarray
    ) -> tuple[np.ndarray, LstmLayer]:
        """dhs [steps, batch, hidden]: the loss's gradient at each hidden state → (gradient at
        the inputs [steps, batch, inputs], gradients of the weights)."""
        grad = LstmLayer(np.zeros_like(self.wx), np.zeros_like(self.wh), np.zeros_like(self.b))
        dx = np.empty((len(cache), *cache[0][0].shape))
        dh_next = np.zeros_like(dhs[0])
        dc_next = np.zeros_like(dhs[0])
        for t in range(len(cache) - 1, -1, -1):
            xt, h_prev, c_prev, i, o, f, g, tc = cache[t]
            dh = dhs[t] + dh_next
            dc = dc_next + dh * o * (1.0 - tc * tc)
            dz = np.concatenate(
                [
                    dc * g * i * (1.0 - i),
                    dh * tc * o * (1.0 - o),
                    dc * c_prev * f * (1.0 - f),
                    dc * i * (1.0 - g * g),
                ],
                axis=1,
            )
            grad.wx += xt.T @ dz
            grad.wh += h_prev.T @ dz
            grad.b += dz.sum(axis=0)
            dx[t] = dz @ self.wx.T
            dh_next = dz @ self.wh.T
            dc_next = dc * f
        return dx, grad

    def arrays(self) -> list[np.ndarray]:
        return [self.wx, self.wh, self.b]


@dataclass
class SequenceAutoencoder:
    """Encoder LSTM over the window → its last hidden state → decoder LSTM fed that state at
    every step → a dense layer back to the readings: the window reconstructed from a code of
    `hidden` numbers."""

    encoder: LstmLayer
    decoder: LstmLayer
    v: np.ndarray  # [hidden, inputs]
    c: np.ndarray  # [inputs]

    @classmethod
    def init(cls, inputs: int, hidden: int, rng: np.random.Generator) -> SequenceAutoencoder:
        bound = 1.0 / np.sqrt(hidden)
        return cls(
            LstmLayer.init(inputs, hidden, rng),
            LstmLayer.init(hidden, hidden, rng),
            rng.uniform(-bound, bound, (hidden, inputs)),
            np.zeros(inputs),
        )

    def arrays(self) -> list[np.ndarray]:
        return [*self.encoder.arrays(), *self.decoder.arrays(), self.v, self.c]

    def rounded(self, dtype: type) -> SequenceAutoencoder:
        """The same network with every weight rounded to `dtype` (float32 for ONNX's LSTM)."""
        a = [x.astype(dtype).astype(np.float64) for x in self.arrays()]
        return SequenceAutoencoder(LstmLayer(*a[0:3]), LstmLayer(*a[3:6]), a[6], a[7])

    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        """[batch, steps, inputs] → the same shape, reconstructed."""
        return self._forward(windows)[0]

    def _forward(self, windows: np.ndarray) -> tuple[np.ndarray, tuple[object, ...]]:
        x = windows.transpose(1, 0, 2)
        enc_hs, enc_cache = self.encoder.forward(x)
        dec_in = np.broadcast_to(enc_hs[-1], (len(x), *enc_hs[-1].shape))
        dec_hs, dec_cache = self.decoder.forward(dec_in)
        y = dec_hs @ self.v + self.c
        return y.transpose(1, 0, 2), (enc_hs, enc_cache, dec_hs, dec_cache)

    def loss_and_gradients(self, windows: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """Mean squared reconstruction error and its gradient for each of `arrays()`."""
        recon, (enc_hs, enc_cache, dec_hs, dec_cache) = self._forward(windows)
        err = recon - windows
        loss = float(np.mean(err * err))
        dy = (2.0 / err.size) * err.transpose(1, 0, 2)  # [steps, batch, inputs]
        dv = np.einsum("tbh,tbi->hi", dec_hs, dy)
        dc = dy.sum(axis=(0, 1))
        d_dec_in, g_dec = self.decoder.backward(dec_cache, dy @ self.v.T)
        d_enc = np.zeros_like(enc_hs)
        d_enc[-1] = d_dec_in.sum(axis=0)
        _, g_enc = self.encoder.backward(enc_cache, d_enc)
        return loss, [*g_enc.arrays(), *g_dec.arrays(), dv, dc]


@dataclass(frozen=True)
class Training:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 0.01
    clip: float = 5.0  # gradient norm cap: one odd window must not blow the weights up


def train(
    model: SequenceAutoencoder, windows: np.ndarray, how: Training, rng: np.random.Generator
) -> list[float]:
    """Adam on shuffled minibatches; the loss of each epoch (mean over its batches)."""
    params = model.arrays()
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    losses = []
    for _ in range(how.epochs):
        order = rng.permutation(len(windows))
        total = 0.0
        for start in range(0, len(order), how.batch_size):
            loss, grads = model.loss_and_gradients(windows[order[start : start + how.batch_size]])
            total += loss
            norm = np.sqrt(sum(float((g * g).sum()) for g in grads))
            scale = min(1.0, how.clip / max(norm, 1e-12))
            step += 1
            for p, g, mi, vi in zip(params, grads, m, v, strict=True):
                g = g * scale
                mi *= beta1
                mi += (1 - beta1) * g
                vi *= beta2
                vi += (1 - beta2) * g * g
                m_hat = mi / (1 - beta1**step)
                v_hat = vi / (1 - beta2**step)
                p -= how.learning_rate * m_hat / (np.sqrt(v_hat) + eps)
        losses.append(total / -(-len(order) // how.batch_size))
    return losses
