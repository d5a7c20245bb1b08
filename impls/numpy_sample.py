"""numpy-sample: per-sample SGD written as plainly as a textbook. The reference.

Every other implementation is checked against the functions in this file: ``sample_forward``
and ``sample_backward`` for one sample, ``reference_train`` for minibatches (the mean of
per-sample gradients, then one optimizer step, ``impls/optim.py``). They say what the math is,
one step at a time, and nothing in them is clever.

``NumpySample.train_epoch`` runs the same math, one sample at a time, without waste: the
sigmoid is ``1 / (1 + exp(-z))`` computed in place, the softmax and the loss come from one
``exp``, and plain SGD updates W and b directly (``np.outer`` into a buffer made once, the
learning rate folded into the short vector); momentum and Adam write the gradients into one
flat buffer for ``FlatOptimizer``. It is timed as the speed-ups' denominator, so it must be no
slower than the loop a student would write (``benchmarks/references/homework_loop.py``).
"""
from __future__ import annotations

import math

import numpy as np

from impls.base import Implementation
from impls.optim import FlatOptimizer, Optimizer


def sigmoid(z):
    # exp(-z) of a very negative z overflows to inf, and 1 / (1 + inf) = 0: the right limit
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


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


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


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
        acts.append(softmax(z) if k == len(params) - 1 else act(z))
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


def _views(flat, layers):
    """[(W1, b1), (W2, b2), ...] as views into one flat array, in that order."""
    out, at = [], 0
    for i, o in layers:
        out.append((flat[at:at + i * o].reshape(i, o), flat[at + i * o:at + i * o + o]))
        at += i * o + o
    return out


class NumpySample(Implementation):
    name = "numpy-sample"
    description = "per-sample SGD in plain numpy, the textbook reference"
    batch_sizes = (1,)

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        self.params = [(np.array(W, dtype=self.dtype), np.array(b, dtype=self.dtype)) for W, b in params]
        self.plain_sgd = self.optimizer == "sgd" and self.momentum == 0
        self.outer = [np.empty_like(W) for W, _ in self.params]     # lr * dW of plain SGD
        if not self.plain_sgd:        # momentum, Adam: parameters and gradients flat, for FlatOptimizer
            self.theta = np.empty(spec.n_params, self.dtype)
            self.grad = np.empty_like(self.theta)
            flat_params, self.grads = _views(self.theta, spec.layers), _views(self.grad, spec.layers)
            for (W, b), (W0, b0) in zip(flat_params, self.params):
                W[...], b[...] = W0, b0
            self.params = flat_params
            self._opt = FlatOptimizer(self.theta.size, self.dtype, self.optimizer, self.lr, self.momentum,
                                      self.betas, self.eps)

    def train_epoch(self, x, y, order):
        params, lr, L = self.params, self.lr, len(self.params)
        sigmoid_act = self.spec.activation == "sigmoid"
        acts = [None] * L                                     # inputs of each layer: x, a1, ...
        total = 0.0
        with np.errstate(over="ignore"):                      # exp(-z) of a very negative z: inf, then 0
            for i in order:
                label = y[i]
                a = x[i]
                for k, (W, b) in enumerate(params):           # forward
                    acts[k] = a
                    z = a @ W
                    z += b
                    if k < L - 1:
                        if sigmoid_act:                       # a = 1 / (1 + exp(-z)), in place
                            np.negative(z, out=z)
                            np.exp(z, out=z)
                            z += 1
                            np.reciprocal(z, out=z)
                        else:
                            np.maximum(z, 0, out=z)
                        a = z
                z -= z.max()                                  # softmax and loss from one exp:
                z_label = float(z[label])                     # loss = log sum exp(z) - z[label]
                np.exp(z, out=z)
                s = z.sum()
                total += math.log(s) - z_label
                delta = z                                     # dL/dz_L = p - onehot
                delta /= s
                delta[label] -= 1
                for k in range(L - 1, -1, -1):                # backward, layer k updated as it goes
                    W, b = params[k]
                    if k > 0:                                 # through W before W changes
                        upstream = W @ delta
                    if self.plain_sgd:                        # W -= lr * outer(a, delta)
                        delta *= lr
                        np.outer(acts[k], delta, out=self.outer[k])
                        W -= self.outer[k]
                        b -= delta
                    else:
                        dW, db = self.grads[k]
                        np.outer(acts[k], delta, out=dW)
                        db[...] = delta
                    if k > 0:
                        a = acts[k]
                        delta = upstream * (a * (1 - a)) if sigmoid_act else upstream * (a > 0)
                if not self.plain_sgd:
                    self._opt.step(self.theta, self.grad)
        return total / max(len(order), 1)

    def predict_proba(self, x):
        a = np.asarray(x, dtype=self.dtype)
        act = sigmoid if self.spec.activation == "sigmoid" else relu
        for k, (W, b) in enumerate(self.params):
            z = a @ W + b
            a = softmax(z) if k == len(self.params) - 1 else act(z)
        return a

    def get_params(self):
        return [(W.copy(), b.copy()) for W, b in self.params]
