"""torch-cpu: the network as torch tensors, autograd and torch.optim.

The training set is copied to the device once and indexed with the epoch's order: no
DataLoader (on this network its per-batch overhead costs more than the math, docs/performance.md).
The batches' losses are kept as they come (no work per step), summed and read once per epoch.
The optimizer is torch.optim's fused kernel, else its foreach form (``_make_optimizer``).
``_TorchBase`` is shared with the CUDA implementations in ``impls/torch_cuda.py``, which own
their epoch loops.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from impls.base import Implementation

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_optimizer(params, optimizer: str, options: dict, tdtype, device) -> tuple[torch.optim.Optimizer, str]:
    """torch.optim's fused kernel (one call updates every parameter) where torch offers it for
    this device and dtype, else its foreach form, and which it is (``details()`` says). torch
    says whether it can fuse only at the first step, so one step on a throwaway parameter asks.
    Shared with torch-ddp's ranks (impls/ddp_rank.py)."""
    cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    trial = torch.zeros(1, dtype=tdtype, device=device, requires_grad=True)
    trial.grad = torch.ones_like(trial)
    try:
        cls([trial], fused=True, **options).step()
    except RuntimeError as exc:
        return cls(params, foreach=True, **options), f"foreach (fused refused: {str(exc).splitlines()[0]})"
    return cls(params, fused=True, **options), "fused"


class _TorchBase(Implementation):
    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        self._tdtype = _TORCH_DTYPES[self.dtype.name]
        dev = torch.device(self.device)
        self._params = []
        for W, b in params:
            self._params.append(torch.tensor(np.asarray(W), dtype=self._tdtype, device=dev).requires_grad_())
            self._params.append(torch.tensor(np.asarray(b), dtype=self._tdtype, device=dev).requires_grad_())
        self._opt = self._make_optimizer()
        self._resident = (None, None, None)  # (numpy x it came from, x tensor, y tensor)

    def _optimizer_options(self) -> dict:
        if self.optimizer == "adam":
            return {"lr": self.lr, "betas": self.betas, "eps": self.eps}
        return {"lr": self.lr, "momentum": self.momentum}

    def _make_optimizer(self):
        opt, self._kernel = make_optimizer(self._params, self.optimizer, self._optimizer_options(),
                                           self._tdtype, self.device)
        return opt

    def _to_device(self, x, y):
        """Device copies of x and y, made once per training set."""
        src, xt, yt = self._resident
        if src is not x:
            xt = torch.as_tensor(np.ascontiguousarray(x), dtype=self._tdtype, device=self.device)
            yt = torch.as_tensor(np.asarray(y, dtype=np.int64), device=self.device)
            self._resident = (x, xt, yt)
        return xt, yt

    def _logits(self, h):
        L = len(self._params) // 2
        for k in range(L):
            W, b = self._params[2 * k], self._params[2 * k + 1]
            h = torch.addmm(b, h, W)                          # (B, n_in) @ (n_in, n_out) + b
            if k < L - 1:
                h = torch.relu(h) if self.spec.activation == "relu" else torch.sigmoid(h)
        return h

    def _batch_loss(self, xb, yb):
        """The batch's mean cross-entropy, with the graph that ``backward`` follows."""
        return F.cross_entropy(self._logits(xb), yb)

    def optimizer_step_site(self):
        return self._opt, "step"               # torch.optim's step, once per batch

    def train_epoch(self, x, y, order):
        xt, yt = self._to_device(x, y)
        order_t = torch.as_tensor(np.asarray(order, dtype=np.int64), device=self.device)
        losses, sizes = [], []
        for idx in torch.split(order_t, self.batch_size):
            loss = self._batch_loss(xt[idx], yt[idx])
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._opt.step()
            losses.append(loss.detach())                      # no work per step: summed once, below
            sizes.append(len(idx))
        if not losses:
            return 0.0
        total = torch.stack(losses).double() @ torch.tensor(sizes, dtype=torch.float64, device=self.device)
        return float(total) / len(order)

    def predict_proba(self, x):
        with torch.no_grad():
            xt = torch.as_tensor(np.asarray(x), dtype=self._tdtype, device=self.device)
            return torch.softmax(self._logits(xt), dim=1).cpu().numpy()

    def get_params(self):
        p = [t.detach().cpu().numpy().copy() for t in self._params]
        return list(zip(p[0::2], p[1::2]))

    def details(self):
        return {"optimizer_kernel": self._kernel}


class TorchCPU(_TorchBase):
    name = "torch-cpu"
    description = "torch eager on the CPU, autograd + torch.optim, resident tensors"
    device = "cpu"

