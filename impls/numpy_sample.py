"""numpy-sample: per-sample SGD in numpy, timed as the speed-ups' denominator (``impls.SPEEDUP_BASE``).

``NumpySample.train_epoch`` runs the oracle's math (impls/oracle.py), one sample at a time,
without waste: the sigmoid is ``1 / (1 + exp(-z))`` computed in place, the softmax and the loss
come from one ``exp``, and plain SGD updates W and b directly (``np.outer`` into a buffer made
once, the learning rate folded into the short vector); momentum and Adam write the gradients
into one flat buffer for ``FlatOptimizer``. As the denominator it must be no slower than the
loop a student would write (the homework-loop yardstick, ``studies/yardsticks/homework_loop.py``).
"""
from __future__ import annotations

import math

import numpy as np

from impls.base import Implementation
from impls.optim import FlatOptimizer
from impls.oracle import relu, sigmoid, softmax


def _views(flat, layers):
    """[(W1, b1), (W2, b2), ...] as views into one flat array, in that order."""
    out, at = [], 0
    for i, o in layers:
        out.append((flat[at:at + i * o].reshape(i, o), flat[at + i * o:at + i * o + o]))
        at += i * o + o
    return out


class NumpySample(Implementation):
    name = "numpy-sample"
    description = "per-sample SGD in plain numpy, the speed-ups' denominator"
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
