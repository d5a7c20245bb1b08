"""gemm-floor: the GEMMs of every training step of a minibatch net, and nothing else.

The epoch floor ("The best CPU family on hw1-q3 reaches at least 50% of the
GEMM-only epoch floor, measured in the same run"): no framework can train an epoch of this
net faster than it runs these matrix products with the BLAS numpy links here, at the threads
pinned. A family's samples/s over this yardstick's is the fraction of that floor it reaches.
"""
from __future__ import annotations

import numpy as np

from impls.base import Implementation


class GemmFloor(Implementation):
    """Per batch of B samples, for layers k = 1..L of shape (n_in, n_out):

    - forward ``Z_k = A_k @ W_k`` (B, n_out), where A_1 is the batch and A_k = Z_(k-1);
    - backward ``G_k = A_k^T @ D_k`` (n_in, n_out) for every layer, and
      ``D_(k-1) = D_k @ W_k^T`` (B, n_in) for every layer but the first, D_L being Z_L.

    Those are the GEMMs ``flops_per_sample`` counts (``impls/base.py``). Every output goes into
    a buffer allocated once (``np.matmul(..., out=)``); the batch is a view of B consecutive
    rows of ``x`` (real data streamed through the caches, without the gather a real step
    makes: ``order`` only sets how many samples the epoch covers). No activation, softmax,
    bias, loss or optimizer runs: **the parameters do not train**, ``train_epoch`` returns a
    loss of 0.0 (none is computed), and ``get_params`` returns the initial parameters
    unchanged. ``predict_proba`` is the untrained net's forward pass, for the contract only.
    """

    name = "gemm-floor"
    description = "the GEMMs of each training step only, preallocated outputs (an epoch floor; does not train)"

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        self.params = [(np.array(W, dtype=self.dtype), np.array(b, dtype=self.dtype)) for W, b in params]
        B = self.batch_size
        self._z = [np.empty((B, o), self.dtype) for _, o in spec.layers]       # forward outputs
        self._g = [np.empty((i, o), self.dtype) for i, o in spec.layers]       # weight gradients
        self._d = [np.empty((B, i), self.dtype) for i, _ in spec.layers]       # input gradients (k > 0)

    def train_epoch(self, x, y, order):
        B, n, L = self.batch_size, len(order), len(self.params)
        Ws = [W for W, _ in self.params]
        for start in range(0, n, B):
            b = min(B, n - start, len(x) - start % len(x))
            first = start % len(x)
            acts = [x[first:first + b]]
            for k in range(L):
                acts.append(np.matmul(acts[k], Ws[k], out=self._z[k][:b]))
            delta = acts[L]
            for k in range(L - 1, -1, -1):
                np.matmul(acts[k].T, delta, out=self._g[k])
                if k > 0:
                    delta = np.matmul(delta, Ws[k].T, out=self._d[k][:b])
        return 0.0

    def predict_proba(self, x):
        h = np.asarray(x, dtype=self.dtype)
        for k, (W, b) in enumerate(self.params):
            h = h @ W + b
            if k < len(self.params) - 1:
                h = np.maximum(h, 0) if self.spec.activation == "relu" else 1.0 / (1.0 + np.exp(-h))
        e = np.exp(h - h.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def get_params(self):
        return [(W.copy(), b.copy()) for W, b in self.params]
