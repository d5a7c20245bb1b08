"""numpy-batch: vectorized minibatch training in numpy; each layer is one GEMM per batch.

Same math as the float64 oracle (impls/oracle.py), written over a batch ``(B, n)`` at a time. Activations are
kept for the backward pass; gradients are averaged over the batch (the loss is a mean).

Nothing is allocated per step. Every W and b is a view into one flat parameter buffer, and
every dW and db a view into one flat gradient buffer, so that the optimizer updates all of
them in one set of in-place passes (``impls/optim.py``, ``FlatOptimizer``). The forward and
backward passes write into buffers made once per batch size (``np.matmul(..., out=)``,
``sum(axis=0, out=)``); a short last batch uses their first rows.
"""
from __future__ import annotations

import numpy as np

from impls.base import Implementation
from impls.optim import FlatOptimizer


def _views(flat, layers):
    """[(W1, b1), (W2, b2), ...] as views into ``flat``: W1 first, then b1, then W2, ..."""
    out, at = [], 0
    for i, o in layers:
        W = flat[at:at + i * o].reshape(i, o)
        b = flat[at + i * o:at + i * o + o]
        out.append((W, b))
        at += i * o + o
    return out


class _Buffers:
    """Everything one step of batch size ``B`` writes, allocated once."""

    def __init__(self, sizes, B, dtype):
        self.x = np.empty((B, sizes[0]), dtype)                   # the batch's inputs
        self.a = [np.empty((B, n), dtype) for n in sizes[1:]]     # activations; the last: logits, then p
        self.d = [np.empty((B, n), dtype) for n in sizes[1:-1]]   # dL/da of each hidden layer
        self.s = [np.empty((B, n), dtype) for n in sizes[1:-1]]   # act'(z) of each hidden layer
        self.rows = np.arange(B)
        self.row = np.empty((B, 1), dtype)                        # per-row max, then per-row sum


class NumpyBatch(Implementation):
    name = "numpy-batch"
    description = "vectorized minibatch numpy (BLAS GEMM per layer)"

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        self.theta = np.empty(spec.n_params, self.dtype)         # every parameter, flat
        self.grad = np.empty_like(self.theta)                     # every gradient, same layout
        self.params = _views(self.theta, spec.layers)
        self.grads = _views(self.grad, spec.layers)
        for (W, b), (W0, b0) in zip(self.params, params):
            W[...], b[...] = W0, b0
        self._opt = FlatOptimizer(self.theta.size, self.dtype, self.optimizer, self.lr, self.momentum,
                                  self.betas, self.eps)
        self._buf = None

    def _buffers(self, B):
        if self._buf is None or len(self._buf.rows) < B:
            self._buf = _Buffers(self.spec.sizes, B, self.dtype)
        return self._buf

    def _forward(self, X, buf, n):
        """Rows ``X`` (n, n0) -> activations [X, a1, ..., logits], each the first n rows of
        its buffer; the last entry is pre-softmax."""
        acts = [X]
        for k, (W, b) in enumerate(self.params):
            z = buf.a[k][:n]
            np.matmul(acts[-1], W, out=z)                         # (n, n_in) @ (n_in, n_out)
            z += b
            if k < len(self.params) - 1:
                if self.spec.activation == "sigmoid":             # 1 / (1 + exp(-z)); exp may overflow
                    np.negative(z, out=z)                         # to inf, giving 0: no NaN (the
                    np.exp(z, out=z)                              # warning is silenced by the caller)
                    z += 1
                    np.reciprocal(z, out=z)
                else:
                    np.maximum(z, 0, out=z)
            acts.append(z)
        return acts

    def _softmax_loss(self, logits, labels, buf):
        """Turns ``logits`` (n, n_L) into dL/dz_L = (p - onehot) / n in place; returns the
        batch's summed loss, -sum log p[label]."""
        n = len(labels)
        rows, row = buf.rows[:n], buf.row[:n]
        np.max(logits, axis=1, keepdims=True, out=row)
        logits -= row                                             # shifted: the largest is 0
        loss = -float(logits[rows, labels].sum())
        np.exp(logits, out=logits)
        np.sum(logits, axis=1, keepdims=True, out=row)
        loss += float(np.log(row).sum())                          # sum of log sum exp
        logits /= row                                             # p
        logits[rows, labels] -= 1
        logits /= n
        return loss

    def _backward(self, acts, labels, buf):
        """Summed loss of one batch; its mean gradients land in ``self.grads``."""
        n = len(labels)
        loss = self._softmax_loss(acts[-1], labels, buf)
        delta = acts[-1]                                          # dL/dz_L, (n, n_L)
        for k in range(len(self.params) - 1, -1, -1):
            dW, db = self.grads[k]
            np.matmul(acts[k].T, delta, out=dW)                   # (n_in, n) @ (n, n_out)
            np.sum(delta, axis=0, out=db)
            if k > 0:
                a, d, s = acts[k], buf.d[k - 1][:n], buf.s[k - 1][:n]
                np.matmul(delta, self.params[k][0].T, out=d)      # dL/da_k: (n, n_out) @ (n_out, n_in)
                if self.spec.activation == "sigmoid":             # act'(z) = a * (1 - a)
                    np.subtract(1, a, out=s)
                    s *= a
                else:                                             # act'(z) = 1 where a > 0, else 0
                    np.sign(a, out=s)
                d *= s
                delta = d
        return loss

    def optimizer_step_site(self):
        return self._opt, "step"               # FlatOptimizer.step, once per batch

    def train_epoch(self, x, y, order):
        buf = self._buffers(min(self.batch_size, len(order)))
        order = np.asarray(order)
        if len(order) and not 0 <= order.min() <= order.max() < len(x):    # checked once: the gather
            raise IndexError(f"order holds indices outside [0, {len(x)})")    # below clips instead
        total = 0.0
        with np.errstate(over="ignore"):                          # exp(-z) of a very negative z
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                X = np.take(x, idx, axis=0, out=buf.x[:len(idx)], mode="clip")   # 3x faster than "raise"
                total += self._backward(self._forward(X, buf, len(idx)), y[idx], buf)
                self._opt.step(self.theta, self.grad)
        return total / max(len(order), 1)

    def predict_proba(self, x):
        x = np.asarray(x, dtype=self.dtype)
        with np.errstate(over="ignore"):
            logits = self._forward(x, _Buffers(self.spec.sizes, len(x), self.dtype), len(x))[-1]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def get_params(self):
        return [(W.copy(), b.copy()) for W, b in self.params]
