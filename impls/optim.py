"""Optimizers for the numpy implementations, updating a list of arrays in place.

The formulas every implementation uses (the torch ones through torch.optim, which computes
the same thing):

    sgd:       p -= lr * g                              (momentum 0)
               v = momentum * v + g;  p -= lr * v       (momentum > 0, PyTorch's convention)
    adam:      t += 1;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
               p -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)
"""
from __future__ import annotations

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
