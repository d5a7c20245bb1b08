"""numpy-batch: vectorized minibatch training in numpy; each layer is one GEMM per batch.

Same math as the reference, written over a batch ``(B, n)`` at a time. Activations are
kept for the backward pass; gradients are averaged over the batch (the loss is a mean).
"""
from __future__ import annotations

import numpy as np

from impls.base import Implementation
from impls.optim import Optimizer


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class NumpyBatch(Implementation):
    name = "numpy-batch"
    description = "vectorized minibatch numpy (BLAS GEMM per layer)"

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        self.params = [(np.array(W, dtype=self.dtype), np.array(b, dtype=self.dtype)) for W, b in params]
        self._flat = [a for pair in self.params for a in pair]
        self._opt = Optimizer(self._flat, self.optimizer, self.lr, self.momentum, self.betas, self.eps)

    def _act(self, z):
        return _sigmoid(z) if self.spec.activation == "sigmoid" else np.maximum(z, 0)

    def _forward(self, X):
        """X (B, n0) -> activations [X, a1, ..., logits]; the last entry is pre-softmax."""
        acts = [X]
        for k, (W, b) in enumerate(self.params):
            z = acts[-1] @ W + b                              # (B, n_in) @ (n_in, n_out)
            acts.append(z if k == len(self.params) - 1 else self._act(z))
        return acts

    def _backward(self, acts, labels):
        """Mean loss and gradients [dW1, db1, dW2, db2, ...] of one batch."""
        B = len(labels)
        logp = _log_softmax(acts[-1])
        loss = -logp[np.arange(B), labels].mean()
        delta = np.exp(logp)
        delta[np.arange(B), labels] -= 1
        delta /= B                                            # dL/dz_L, (B, n_L)
        grads = []
        for k in range(len(self.params) - 1, -1, -1):
            W = self.params[k][0]
            grads[:0] = [acts[k].T @ delta, delta.sum(axis=0)]  # (n_in, B) @ (B, n_out)
            if k > 0:
                a = acts[k]
                dact = a * (1 - a) if self.spec.activation == "sigmoid" else (a > 0)
                delta = (delta @ W.T) * dact                  # (B, n_out) @ (n_out, n_in)
        return float(loss), grads

    def train_epoch(self, x, y, order):
        total = 0.0
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            loss, grads = self._backward(self._forward(x[idx]), y[idx])
            total += loss * len(idx)
            self._opt.step(self._flat, grads)
        return total / max(len(order), 1)

    def predict_proba(self, x):
        logits = self._forward(np.asarray(x, dtype=self.dtype))[-1]
        return np.exp(_log_softmax(logits))

    def get_params(self):
        return [(W.copy(), b.copy()) for W, b in self.params]
