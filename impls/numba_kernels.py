"""The kernels numba-sample (impls/numba_sample.py) and numba-batch (impls/numba_batch.py)
share, and their common base: the network as explicit loops, compiled with numba.njit.

Parameters live in one flat vector ``theta`` so that one compiled kernel serves any number of
layers: layer k's weights are stored transposed, ``W^T`` (n_out, n_in) row-major at
``theta[w_off[k]:]``, and its ``b`` at ``theta[b_off[k]:]``. Transposed, every inner loop runs
over the long input axis (784 for layer 1): forward is a dot product per output unit, the
update an axpy per output unit, both contiguous; that measured 1.7x faster than 32-wide
inner loops over W's rows. Activations and deltas of all layers share one buffer each, layer k at
``a_off[k]`` (layer 0 is the input).

Why loops and not np.dot per sample: inside njit, np.dot goes through SciPy's BLAS with a
per-call cost that dominates per-sample work (docs/performance.md). The loops are dense on
purpose: skipping the zero pixels (half of a Fashion-MNIST image) measured 1.9x slower here,
because the branch stops LLVM from vectorising the 32-wide inner loop.
Typed constants (``one``) come from the run dtype, since a Python float literal would turn
float32 arithmetic into float64.
The optimizers are one fused loop each: per sample inside the gradient loop
(``numba_sample._layer_update``), per batch one pass over the flat gradient (``_optimizer_step``).
"""
from __future__ import annotations

import functools
import types

import numpy as np
# np.dot's BLAS inside njit (SciPy's), loaded now so that thread pinning and blas_threads() reach it
import scipy.linalg.cython_blas  # noqa: F401
from numba import njit, prange
from threadpoolctl import ThreadpoolController

from impls.base import Implementation

# No "nnan"/"ninf": a diverging run must still produce NaN, so the harness can stop it.
# error_model="numpy" everywhere: under numba's default ("python") every float division checks
# for zero to raise ZeroDivisionError, and that branch kept LLVM from vectorising the Adam loops
# (measured: 1.9 ms against 43 us per Adam step of hw1-q3's 235k parameters, float32). With
# numpy's model a division by zero gives inf or NaN, as numpy does.
_FASTMATH = {"reassoc", "contract", "arcp"}
SGD, MOMENTUM, ADAM = 0, 1, 2
# hp vector (run dtype): lr, momentum, beta1, beta2, eps, one
LR, MU, B1, B2, EPS, ONE = range(6)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _sigmoid(z, one):
    if z >= 0:
        return one / (one + np.exp(-z))
    e = np.exp(z)
    return e / (one + e)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _activate(s, last, relu, one):
    if last:
        return s
    if relu:
        return s if s > 0 else s * 0
    return _sigmoid(s, one)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _layer_forward(theta, w, b, n_in, n_out, a_in, a_out, last, relu, one):
    """a_out = act(W^T a_in + b) for one sample; the last layer returns logits."""
    WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
    for j in range(n_out):
        s = theta[b + j]
        for i in range(n_in):                                 # dot(W^T[j, :], a_in)
            s += WT[j, i] * a_in[i]
        if last:
            a_out[j] = s
        elif relu:
            a_out[j] = s if s > 0 else s * 0
        else:
            a_out[j] = _sigmoid(s, one)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _softmax_loss(z, label, out):
    """Writes dL/dz = softmax(z) - onehot(label) into out; returns -log softmax(z)[label]."""
    m = z[0]
    for j in range(1, z.shape[0]):
        m = max(m, z[j])
    s = z[0] * 0
    for j in range(z.shape[0]):
        out[j] = np.exp(z[j] - m)
        s += out[j]
    for j in range(z.shape[0]):
        out[j] /= s
    out[label] -= 1
    return np.log(s) - (z[label] - m)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _input_delta(theta, w, n_in, n_out, d_out, a_in, d_in, relu, one):
    """d_in = (W d_out) * act'(z_in), given a_in = act(z_in)."""
    WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
    for i in range(n_in):
        d_in[i] = d_out[0] * 0
    for j in range(n_out):
        dj = d_out[j]
        for i in range(n_in):                                 # d_in += d_out[j] * W^T[j, :]
            d_in[i] += dj * WT[j, i]
    for i in range(n_in):
        a = a_in[i]
        if relu:
            d_in[i] = d_in[i] if a > 0 else d_in[i] * 0
        else:
            d_in[i] *= a * (one - a)


def _optimizer_step(theta, g, m, v, hp, kind, t):
    """theta -= update(g); t is the Adam step (1-based). Inlined below (prange is range there)."""
    lr = hp[LR]
    if kind == SGD:
        for p in prange(theta.shape[0]):
            theta[p] -= lr * g[p]
    elif kind == MOMENTUM:
        mu = hp[MU]
        for p in prange(theta.shape[0]):
            v[p] = mu * v[p] + g[p]
            theta[p] -= lr * v[p]
    else:
        one, b1, b2, eps = hp[ONE], hp[B1], hp[B2], hp[EPS]
        bc1 = one - b1 ** t
        bc2 = one - b2 ** t
        for p in prange(theta.shape[0]):
            m[p] = b1 * m[p] + (one - b1) * g[p]
            v[p] = b2 * v[p] + (one - b2) * (g[p] * g[p])
            theta[p] -= lr * (m[p] / bc1) / (np.sqrt(v[p] / bc2) + eps)


def _variant(func, suffix: str):
    """``func`` under another name. numba's cache keys compiled code by the function's name,
    bytecode and signature, not by the options it was compiled with: two dispatchers of one
    function (serial and parallel) would share one cache entry, and whichever compiled first
    would run for both (measured: the "serial" kernel ran at the parallel one's speed)."""
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix, func.__defaults__,
                              func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    return copy


# inlined into the minibatch kernels (impls/numba_batch.py)
_optimizer_step_inline = njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")(_variant(_optimizer_step, "_inline"))


@functools.cache
def blas_threads():
    """The process's threadpoolctl controller, built once: a limit through it costs microseconds
    (``threadpool_limits`` walks the loaded libraries each time: 0.7 ms)."""
    return ThreadpoolController()


class NumbaBase(Implementation):
    """theta's layout (offsets, hyperparameters, optimizer state) and what both numba classes share."""
    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        dt = self.dtype
        sizes = np.array(spec.sizes, dtype=np.int64)
        self._sizes = sizes
        self._a_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        w_off, b_off, pos = [], [], 0
        for i, o in spec.layers:
            w_off.append(pos)
            b_off.append(pos + i * o)
            pos += i * o + o
        self._w_off = np.array(w_off, dtype=np.int64)
        self._b_off = np.array(b_off, dtype=np.int64)
        self.theta = np.concatenate([np.concatenate([np.ravel(np.asarray(W).T), np.ravel(b)])
                                     for W, b in params]).astype(dt)
        self._hp = np.array([self.lr, self.momentum, self.betas[0], self.betas[1], self.eps, 1.0], dtype=dt)
        self._kind = ADAM if self.optimizer == "adam" else (MOMENTUM if self.momentum > 0 else SGD)
        self._g = np.zeros_like(self.theta)
        self._m = np.zeros_like(self.theta)
        self._v = np.zeros_like(self.theta)
        self._state = np.zeros(1, dtype=np.int64)

    def _check_data(self, x, y, order):
        x = np.ascontiguousarray(x, dtype=self.dtype)
        return x, np.ascontiguousarray(y, dtype=np.int64), np.ascontiguousarray(order, dtype=np.int64)

    def get_params(self):
        return [(self.theta[w:b].reshape(o, i).T.copy(), self.theta[b:b + o].copy())
                for (i, o), w, b in zip(self.spec.layers, self._w_off, self._b_off)]

    def predict_proba(self, x):
        # Evaluation is never timed: plain numpy GEMMs on views of theta, on one BLAS thread. On
        # more, numpy's BLAS threads spin on after it into the next epoch and take a core from
        # numba-batch's parts (docs/performance.md, "numba-batch split by rows": 92k against 104k
        # samples/s for the epoch after an evaluation).
        with blas_threads().limit(limits=1, user_api="blas"):
            a = np.asarray(x, dtype=self.dtype)
            params = self.get_params()
            for k, (W, b) in enumerate(params):
                z = a @ W + b
                if k < len(params) - 1:
                    a = np.maximum(z, 0) if self.spec.activation == "relu" else 1 / (1 + np.exp(-np.clip(z, -80, 80)))
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
