"""torch-minimal: the torch loop a user would write for this network, as the family's
yardstick for torch-cpu (torch-cpu should reach at least 0.9 of it on hw1-q3).

``nn.Sequential`` of ``nn.Linear`` and the activation, ``torch.optim.Adam(fused=True)`` (SGD
with ``fused=True`` for an SGD configuration), the training set as resident tensors indexed by
the epoch's order, ``F.cross_entropy``, and nothing else. The initial weights are the
contract's ``params`` (``nn.Linear`` stores W transposed), so that its parity with the float64
reference can be checked (tests/test_studies_yardsticks.py). Not in the ``impls`` registry.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from impls.base import Implementation

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchMinimal(Implementation):
    name = "torch-minimal"
    description = "the minimal torch loop: nn.Sequential, Adam(fused=True), F.cross_entropy"

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        dtype = _DTYPES[self.dtype.name]
        layers = []
        for k, (W, b) in enumerate(params):
            linear = nn.Linear(*np.shape(W), dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.asarray(W).T))
                linear.bias.copy_(torch.from_numpy(np.asarray(b)))
            layers.append(linear)
            if k < len(params) - 1:
                layers.append(nn.ReLU() if spec.activation == "relu" else nn.Sigmoid())
        self.model = nn.Sequential(*layers)
        if self.optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=self.betas, eps=self.eps,
                                        fused=True)
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum, fused=True)
        self.source = self.x = self.y = None

    def train_epoch(self, x, y, order):
        if self.source is not x:                                  # made resident once per training set
            self.source = x
            self.x, self.y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, np.int64))
        order = torch.from_numpy(np.asarray(order, np.int64))
        total = 0.0
        for idx in order.split(self.batch_size):
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item() * len(idx)
        return total / max(len(order), 1)

    def predict_proba(self, x):
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(np.asarray(x, self.dtype))), dim=1).numpy()

    def get_params(self):
        linears = [m for m in self.model if isinstance(m, nn.Linear)]
        return [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears]
