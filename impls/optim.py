"""Optimizers for the numpy implementations.

The formulas every implementation uses (the torch ones through torch.optim, which computes
the same thing):

    sgd:       p -= lr * g                              (momentum 0)
               v = momentum * v + g;  p -= lr * v       (momentum > 0, PyTorch's convention)
    adam:      t += 1;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
               p -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)

``Optimizer`` writes them as they read, over a list of arrays (the float64
oracle, ``impls/oracle.py``). ``FlatOptimizer`` computes the same over one flat
parameter buffer and one flat gradient buffer, every pass in place into state and scratch
allocated once: no temporaries (numpy-batch).
"""
from __future__ import annotations

import math

import numpy as np


class Optimizer:
    def __init__(self, arrays: list[np.ndarray], kind: str, lr: float, momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.kind, self.lr, self.momentum, self.betas, self.eps = kind, lr, momentum, betas, eps
        self.t = 0
        needs_v = kind == "adam" or momentum > 0
        self.m = [np.zeros_like(a) for a in arrays] if kind == "adam" else None
        self.v = [np.zeros_like(a) for a in arrays] if needs_v else None

    def step(self, arrays: list[np.ndarray], grads: list[np.ndarray]) -> None:
        lr = self.lr
        if self.kind == "sgd":
            if self.v is None:
                for p, g in zip(arrays, grads):
                    p -= lr * g
            else:
                for p, g, v in zip(arrays, grads, self.v):
                    v *= self.momentum
                    v += g
                    p -= lr * v
            return
        b1, b2 = self.betas
        self.t += 1
        bc1, bc2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for p, g, m, v in zip(arrays, grads, self.m, self.v):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= lr * (m / bc1) / (np.sqrt(v / bc2) + self.eps)


class FlatOptimizer:
    """The formulas above over one flat buffer ``p`` and its gradient ``g`` (same length and
    dtype), in place: ``out=`` into the state and one scratch buffer ``s``, ten passes over
    memory per Adam step (the list form above makes fourteen, four of them into fresh temporaries).

    Adam keeps its averages scaled, ``M = m / (1-b1)`` and ``V = v / (1-b2)``, so that each
    update is a multiply and an add (``M = b1*M + g``, ``V = b2*V + g*g``); the last line puts
    the factors back into two scalars::

        p -= lr * (m / bc1) / (sqrt(v / bc2) + eps)
           = c * M / (sqrt(V) + eps / r),   r = sqrt((1-b2) / bc2),  c = lr * (1-b1) / (bc1 * r)

    The same value up to rounding (parity: tests/test_conformance.py)."""

    def __init__(self, size: int, dtype, kind: str, lr: float, momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.kind, self.lr, self.momentum, self.betas, self.eps = kind, lr, momentum, betas, eps
        self.t = 0
        self.m = np.zeros(size, dtype) if kind == "adam" else None
        self.v = np.zeros(size, dtype) if kind == "adam" or momentum > 0 else None
        self.s = np.empty(size, dtype)

    def step(self, p: np.ndarray, g: np.ndarray) -> None:
        m, v, s = self.m, self.v, self.s
        if self.kind == "sgd":
            if v is not None:                        # v = momentum * v + g
                v *= self.momentum
                v += g
                g = v
            np.multiply(g, self.lr, out=s)           # p -= lr * g (or lr * v)
            p -= s
            return
        b1, b2 = self.betas
        self.t += 1
        bc1, bc2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        r = math.sqrt((1.0 - b2) / bc2)
        m *= b1                                      # M = b1*M + g
        m += g
        np.multiply(g, g, out=s)                     # V = b2*V + g*g
        v *= b2
        v += s
        np.sqrt(v, out=s)                            # p -= c * M / (sqrt(V) + eps / r)
        s += self.eps / r
        np.divide(m, s, out=s)
        s *= self.lr * (1.0 - b1) / (bc1 * r)
        p -= s
