"""numpy-sample: per-sample SGD written as plainly as a textbook. The reference.

Every other implementation is checked against the functions in this file: ``sample_forward``
and ``sample_backward`` for one sample, ``reference_train`` for minibatches (the mean of
per-sample gradients, then one optimizer step). Slow on purpose: nothing here is clever.
"""
from __future__ import annotations

import numpy as np

from impls.base import Implementation
from impls.optim import Optimizer


def sigmoid(z):
    # exp of a negative number only: no overflow warning for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def relu(z):
    return np.maximum(z, 0)


def activation_derivative(activation: str, z, a):
    """d act(z) / dz, given z and a = act(z)."""
    if activation == "sigmoid":
        return a * (1 - a)
    return (z > 0).astype(z.dtype)


def log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def bias_gradient(upstream, dact):
    """dL/db of a hidden layer: the gradient arriving at its activations times act'(z),
    element by element (the homework took a dot product here and got one scalar)."""
    return upstream * dact


def sample_forward(params, x, activation: str):
    """One sample ``x`` (n0,) -> (zs, acts): pre-activations and activations of every layer,
    ``acts[0] = x`` and ``acts[-1]`` the softmax probabilities."""
    act = sigmoid if activation == "sigmoid" else relu
    acts, zs = [x], []
    for k, (W, b) in enumerate(params):
        z = acts[-1] @ W + b                                  # (n_in,) @ (n_in, n_out)
        zs.append(z)
        acts.append(np.exp(log_softmax(z)) if k == len(params) - 1 else act(z))
    return zs, acts


def sample_backward(params, zs, acts, label: int, activation: str):
    """Gradients of the cross-entropy of one sample: [(dW1, db1), (dW2, db2), ...]."""
    L = len(params)
    delta = acts[-1].copy()
    delta[label] -= 1                                         # dL/dz_L = p - onehot
    grads = [None] * L
    db = delta
    for k in range(L - 1, -1, -1):
        grads[k] = (np.outer(acts[k], delta), db)             # (n_in,) x (n_out,)
        if k > 0:
            upstream = params[k][0] @ delta                   # dL/da_k: (n_in, n_out) @ (n_out,)
            dact = activation_derivative(activation, zs[k - 1], acts[k])
            db = bias_gradient(upstream, dact)
            delta = upstream * dact
    return grads


def sample_loss(zs, label: int) -> float:
    return float(-log_softmax(zs[-1])[label])


def batch_gradients(params, x, y, activation: str):
    """Mean loss and mean gradients over the samples of ``x`` (B, n0), one sample at a time."""
    total = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    loss = 0.0
    for xi, yi in zip(x, y):
        zs, acts = sample_forward(params, xi, activation)
        loss += sample_loss(zs, int(yi))
        for (tW, tb), (dW, db) in zip(total, sample_backward(params, zs, acts, int(yi), activation)):
            tW += dW
            tb += db
    n = len(x)
    return loss / n, [(tW / n, tb / n) for tW, tb in total]


def reference_train(spec, params, x, y, order, *, lr, batch_size=1, dtype="float64",
                    optimizer="sgd", momentum=0.0, betas=(0.9, 0.999), eps=1e-8):
    """Train one epoch at any batch size with the textbook math; returns (params, mean loss).

    The last batch of an epoch may be short; its loss is still averaged over its own size.
    """
    params = [(np.array(W, dtype=dtype), np.array(b, dtype=dtype)) for W, b in params]
    flat = [a for pair in params for a in pair]
    opt = Optimizer(flat, optimizer, lr, momentum, betas, eps)
    x, order = np.asarray(x, dtype=dtype), np.asarray(order)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        loss, grads = batch_gradients(params, x[idx], y[idx], spec.activation)
        total += loss * len(idx)
        opt.step(flat, [g for pair in grads for g in pair])
    return params, total / max(len(order), 1)


class NumpySample(Implementation):
    name = "numpy-sample"
    description = "per-sample SGD in plain numpy, the textbook reference"
    batch_sizes = (1,)

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        self.params = [(np.array(W, dtype=self.dtype), np.array(b, dtype=self.dtype)) for W, b in params]
        self._flat = [a for pair in self.params for a in pair]
        self._opt = Optimizer(self._flat, self.optimizer, self.lr, self.momentum, self.betas, self.eps)

    def train_epoch(self, x, y, order):
        total = 0.0
        for i in order:
            zs, acts = sample_forward(self.params, x[i], self.spec.activation)
            total += sample_loss(zs, int(y[i]))
            grads = sample_backward(self.params, zs, acts, int(y[i]), self.spec.activation)
            self._opt.step(self._flat, [g for pair in grads for g in pair])
        return total / max(len(order), 1)

    def predict_proba(self, x):
        a = np.asarray(x, dtype=self.dtype)
        for k, (W, b) in enumerate(self.params):
            z = a @ W + b
            a = np.exp(log_softmax(z)) if k == len(self.params) - 1 else (
                sigmoid(z) if self.spec.activation == "sigmoid" else relu(z))
        return a

    def get_params(self):
        return [(W.copy(), b.copy()) for W, b in self.params]
