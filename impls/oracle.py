"""The float64 oracle: the network's math written as plainly as a textbook.

Every implementation is checked against these functions: ``sample_forward`` and
``sample_backward`` for one sample, ``mean_loss_and_gradients`` for a minibatch (the mean of
per-sample gradients), ``train_epoch`` for an epoch at any batch size (one optimizer step per
minibatch, ``impls/optim.py``). They say what the math is, one step at a time, and nothing in
them is clever. The harness's parity check (benchmarks/runner.py ``one_step_parity``) and the
conformance tests run them in float64.
"""
from __future__ import annotations

import numpy as np

from impls.optim import Optimizer


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


def mean_loss_and_gradients(params, x, y, activation: str):
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


def train_epoch(spec, params, x, y, order, *, lr, batch_size=1, dtype="float64",
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
        loss, grads = mean_loss_and_gradients(params, x[idx], y[idx], spec.activation)
        total += loss * len(idx)
        opt.step(flat, [g for pair in grads for g in pair])
    return params, total / max(len(order), 1)
