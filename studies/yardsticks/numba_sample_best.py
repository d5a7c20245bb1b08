"""numba-sample-best: the fastest per-sample numba kernel written for hw1-q4's shape of net.

The numba family's yardstick: ``numba-sample`` (impls/numba_sample.py) is measured
against it, so it lives in the lab (studies/) and not in the ``impls`` registry. It trains
any net with exactly two hidden layers (784-32-32-10 is hw1-q4's), sigmoid or ReLU, with plain
per-sample SGD in float32 or float64; momentum and Adam are refused.

What makes it fast, each choice measured in docs/performance.md ("numba kernels"):
- W1 is stored transposed, (n1, n0): every loop over the 784 inputs is contiguous.
- Four hidden units per sweep of the input: one pass over x feeds four dot products.
- Sample t's layer-1 update is fused with sample t+1's layer-1 forward. W1 (100 kB in float32,
  200 kB in float64) lives in L2, not L1; the plain order reads it for the forward, and reads
  and writes it again for the update. Fused, each element is read once, updated with sample
  t's outer product, written back and multiplied by sample t+1's pixel while still in a
  register. Sample t's update is therefore applied lazily (``pending``) and flushed at the end
  of the epoch, so the parameters after ``train_epoch`` are exactly the plain order's.
- The sizes are runtime values: compiled as constants, LLVM emitted scalar code (slower).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from impls.base import ConfigError, Implementation
# the fused first-layer kernel (sample t's update with sample t+1's forward), the activation,
# the fastmath flags (no nnan/ninf: a diverging run must give NaN) and the untimed evaluation
# are numba-sample's own, shared so that each exists once
from impls.numba_kernels import _FASTMATH, NumbaBase, _activate
from impls.numba_sample import _first_layer

# error_model="numpy": no zero-division check (and its branch) in the divisions (impls/numba_kernels.py)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _dact(a, relu, one):
    """act'(z) written with a = act(z)."""
    if relu:
        return one if a > 0 else one * 0
    return a * (one - a)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _flush1(W1T, xp, c):
    n1, n0 = W1T.shape
    for j in range(n1):
        cj = c[j]
        for i in range(n0):
            W1T[j, i] -= cj * xp[i]


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _epoch(x, y, order, W1T, b1, W2T, b2, W3T, b3, lr, relu, a1, a2, z3, d1, d2, d3, c):
    one = lr * 0 + 1
    n = order.shape[0]
    n1, n2, n3 = W1T.shape[0], W2T.shape[0], W3T.shape[0]
    total = 0.0
    prev = 0
    for t in range(n):
        idx = order[t]
        _first_layer(W1T, b1, x[prev], c, x[idx], a1, t > 0, False, relu, one)
        prev = idx
        for j in range(n2):                            # layer 2 forward
            s = b2[j]
            for i in range(n1):
                s += W2T[j, i] * a1[i]
            a2[j] = _activate(s, False, relu, one)
        for j in range(n3):                            # logits
            s = b3[j]
            for i in range(n2):
                s += W3T[j, i] * a2[i]
            z3[j] = s
        m = z3[0]                                      # softmax, loss, d3 = p - onehot
        for j in range(1, n3):
            m = max(m, z3[j])
        se = one * 0
        for j in range(n3):
            d3[j] = np.exp(z3[j] - m)
            se += d3[j]
        for j in range(n3):
            d3[j] /= se
        label = y[idx]
        d3[label] -= 1
        total += np.log(se) - (z3[label] - m)
        for i in range(n2):                            # d2 = (W3 d3) * act'(a2), W3 as it was
            d2[i] = one * 0
        for j in range(n3):
            e = d3[j]
            for i in range(n2):
                d2[i] += e * W3T[j, i]
        for i in range(n2):
            d2[i] *= _dact(a2[i], relu, one)
        for j in range(n3):                            # W3, b3 update
            s = lr * d3[j]
            for i in range(n2):
                W3T[j, i] -= s * a2[i]
            b3[j] -= s
        for i in range(n1):                            # d1 = (W2 d2) * act'(a1)
            d1[i] = one * 0
        for j in range(n2):
            e = d2[j]
            for i in range(n1):
                d1[i] += e * W2T[j, i]
        for i in range(n1):
            d1[i] *= _dact(a1[i], relu, one)
        for j in range(n2):                            # W2, b2 update
            s = lr * d2[j]
            for i in range(n1):
                W2T[j, i] -= s * a1[i]
            b2[j] -= s
        for j in range(n1):                            # b1 now; W1 with the next forward
            c[j] = lr * d1[j]
            b1[j] -= c[j]
    if n > 0:
        _flush1(W1T, x[prev], c)
    return total / max(n, 1)


class NumbaSampleBest(Implementation):
    name = "numba-sample-best"
    description = "yardstick: per-sample SGD, two hidden layers, W1 update fused with the next forward"
    batch_sizes = (1,)

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        if len(spec.layers) != 3:
            raise ConfigError(f"{self.name} trains nets with two hidden layers only, got sizes {spec.sizes}")
        if self.optimizer != "sgd" or self.momentum != 0.0:
            raise ConfigError(f"{self.name} runs plain SGD only (no momentum, no Adam)")
        dt = self.dtype
        self._W = [np.ascontiguousarray(np.asarray(W, dtype=dt).T) for W, _ in params]   # transposed
        self._b = [np.array(b, dtype=dt) for _, b in params]
        n1, n2, n3 = spec.sizes[1:]
        self._a1, self._a2, self._z3 = np.zeros(n1, dt), np.zeros(n2, dt), np.zeros(n3, dt)
        self._d1, self._d2, self._d3 = np.zeros(n1, dt), np.zeros(n2, dt), np.zeros(n3, dt)
        self._c = np.zeros(n1, dt)
        self._lr = dt.type(self.lr)

    def train_epoch(self, x, y, order):
        x = np.ascontiguousarray(x, dtype=self.dtype)
        y = np.ascontiguousarray(y, dtype=np.int64)
        order = np.ascontiguousarray(order, dtype=np.int64)
        (W1T, W2T, W3T), (b1, b2, b3) = self._W, self._b
        return float(_epoch(x, y, order, W1T, b1, W2T, b2, W3T, b3, self._lr, self.spec.activation == "relu",
                            self._a1, self._a2, self._z3, self._d1, self._d2, self._d3, self._c))

    def get_params(self):
        return [(W.T.copy(), b.copy()) for W, b in zip(self._W, self._b)]

    # never timed: numpy GEMMs on the parameters, as numba-sample evaluates
    predict_proba = NumbaBase.predict_proba
