"""homework-loop: the per-sample training loop the way the homework writes it, as the
yardstick numpy-sample is held to (numpy-sample should reach at least 0.8 of it on
hw1-q4). Not in the ``impls`` registry.

Plain and direct: ``1 / (1 + exp(-z))``, a softmax, the deltas of every layer from the top
down, then ``W -= lr * np.outer(a, delta)`` and ``b -= lr * delta`` applied to the arrays
themselves. SGD only, one sample at a time. Its one departure from a student's loop: the epoch
runs under ``np.errstate(over="ignore")``, so that a sigmoid of a very negative float32 gives
its limit, 0, without a warning per sample (set once per epoch, it costs nothing per sample).
"""
from __future__ import annotations

import numpy as np

from impls.base import ConfigError, Implementation


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def softmax(z):
    e = np.exp(z - np.max(z))
    return e / np.sum(e)


class HomeworkLoop(Implementation):
    name = "homework-loop"
    description = "the homework's per-sample loop: np.outer updates applied to W and b, SGD"
    batch_sizes = (1,)

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        if self.optimizer != "sgd" or self.momentum != 0:
            raise ConfigError(f"{self.name} trains with plain SGD only (no momentum, no Adam)")
        self.W = [np.array(W, dtype=self.dtype) for W, _ in params]
        self.b = [np.array(b, dtype=self.dtype) for _, b in params]

    def _activation(self, z):
        return sigmoid(z) if self.spec.activation == "sigmoid" else np.maximum(z, 0)

    def _derivative(self, a):
        return a * (1 - a) if self.spec.activation == "sigmoid" else (a > 0).astype(a.dtype)

    def train_epoch(self, x, y, order):
        L = len(self.W)
        total_loss = 0.0
        with np.errstate(over="ignore"):
            for i in order:
                # forward: keep every layer's activations
                h = [x[i]]
                for k in range(L):
                    z = h[k] @ self.W[k] + self.b[k]
                    h.append(softmax(z) if k == L - 1 else self._activation(z))
                p = h[-1]
                total_loss += -np.log(p[y[i]])

                # backward: the deltas, from the output down
                onehot = np.zeros_like(p)
                onehot[y[i]] = 1
                deltas = [p - onehot]
                for k in range(L - 1, 0, -1):
                    deltas.insert(0, (self.W[k] @ deltas[0]) * self._derivative(h[k]))

                # update
                for k in range(L):
                    self.W[k] -= self.lr * np.outer(h[k], deltas[k])
                    self.b[k] -= self.lr * deltas[k]
        return float(total_loss) / max(len(order), 1)

    def predict_proba(self, x):
        h = np.asarray(x, dtype=self.dtype)
        for k in range(len(self.W) - 1):
            h = self._activation(h @ self.W[k] + self.b[k])
        z = h @ self.W[-1] + self.b[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def get_params(self):
        return [(W.copy(), b.copy()) for W, b in zip(self.W, self.b)]
