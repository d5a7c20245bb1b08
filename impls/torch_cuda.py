"""torch-cuda and torch-cuda-graph: the network on a CUDA GPU, eager and as a captured step.

Both keep the training set resident on the device and index it with the epoch's order, copied
to the device once per epoch (the device permutation). The epoch's loss is summed on the
device and read once. An epoch waits for the GPU twice: when the order is copied in (before the
batch loop) and when the loss is read (after it); the loop in between never does
(tests/test_gpu.py runs it under ``torch.cuda.set_sync_debug_mode("error")``).

- TF32 is off unless asked for (``tf32=True``, float32 only): float32 then means float32, and
  parity with the float64 reference is held to the float32 row of ``impls.PARITY_TOLERANCE``.
  The switch is torch's process-wide ``fp32_precision`` for CUDA matmuls, set at the start of
  every piece of work; the legacy ``allow_tf32`` is never touched (torch refuses a mix).
- The optimizer: torch.optim's fused kernel (one launch updates every parameter) where torch
  offers it for this device and dtype, else its foreach form; ``details()`` says which ran
  (``_TorchBase._make_optimizer`` in impls/torch_impl.py, shared with torch-cpu).

torch-cuda-graph runs the same math with one training step (gather the batch from the resident
set, forward, backward, optimizer) captured once into a CUDA graph and replayed per batch: two
launches per batch (copy the batch's row of indices in, replay) instead of a dozen or more.
The step reads fixed buffers, so a short last batch is padded to ``batch_size`` rows with
sample 0 and those rows weigh nothing in the mean loss: one graph serves every batch.
Capture happens once per resident training set, in ``warm_up`` (or the first epoch), after a
few warm-up steps on a side stream whose effect on the parameters and the optimizer state is
undone; its time is ``details()["capture_seconds"]`` and lands in the harness's
``compile_seconds`` (benchmarks/runner.py, ``measure_first_call``).

Why a hand-made graph and not ``torch.compile(mode="reduce-overhead")``: the captured work is
exactly the eager step (same kernels, so graph replay can be held to eager's numbers), its
capture is one measurable call with nothing else in it, and it needs no compiler toolchain at
run time. Which one is faster on this net has not been measured here (no GPU in the session
that wrote this); docs/gpu.md lists it among what a GPU run should settle.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from impls.torch_impl import _TorchBase


class TorchCUDA(_TorchBase):
    name = "torch-cuda"
    description = "torch eager on a CUDA GPU: resident data, device permutation, fused optimizer, TF32 off"
    device = "cuda"
    needs_gpu = True
    takes_tf32 = True

    @classmethod
    def unavailable_reason(cls):
        if not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        return None

    # ---- set-up ------------------------------------------------------------------------------
    def _set_precision(self) -> None:
        torch.backends.cuda.matmul.fp32_precision = "tf32" if self.tf32 else "ieee"

    def _order_to_device(self, order):
        """The epoch's order on the device; a blocking host-to-device copy of 8 bytes a sample."""
        return torch.as_tensor(np.asarray(order, dtype=np.int64), device=self.device)

    # ---- the epoch ---------------------------------------------------------------------------
    def train_epoch(self, x, y, order):
        self._set_precision()
        xt, yt = self._to_device(x, y)
        order_t = self._order_to_device(order)
        total = self._epoch_loop(xt, yt, order_t)
        return float(total) / max(len(order), 1)            # waits for the last step

    def _epoch_loop(self, xt, yt, order_t):
        """Every batch of the epoch, queued without waiting for the GPU; returns the summed
        loss as a device scalar."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for idx in torch.split(order_t, self.batch_size):
            xb, yb = xt.index_select(0, idx), yt.index_select(0, idx)     # (B, n0), (B,)
            loss = F.cross_entropy(self._logits(xb), yb)
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._opt.step()
            total += loss.detach() * len(idx)
        return total

    def predict_proba(self, x):
        self._set_precision()
        return super().predict_proba(x)

    def sync(self):
        torch.cuda.synchronize()

    def details(self):
        return {**super().details(), "tf32": "on" if self.tf32 else "off"}


class TorchCUDAGraph(TorchCUDA):
    name = "torch-cuda-graph"
    description = "torch-cuda with the training step captured once into a CUDA graph, replayed per batch"
    capture = True          # False: the same step, run eagerly (how tests/test_gpu_cpu.py runs it on a CPU)
    WARMUP_STEPS = 3

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        B, dev = self.batch_size, self.device
        self._batch = torch.zeros(B + 1, dtype=torch.int64, device=dev)  # [B sample indices, how many are real]
        self._rows = torch.arange(B, device=dev)
        self._total = torch.zeros((), dtype=torch.float64, device=dev)   # sum of per-sample losses
        self._data = None           # (x, y) tensors the captured step reads
        self._graph = None
        self.capture_seconds = float("nan")

    def _optimizer_options(self):
        options = super()._optimizer_options()
        if self.optimizer == "adam" and self.capture:
            options["capturable"] = True    # Adam's step count and bias correction stay on the device
        return options

    def _step(self):
        """One training step on the batch in ``self._batch``: torch-cuda's loop body, with the
        mean loss taken over the real rows only."""
        xt, yt = self._data
        B = self.batch_size
        idx, n = self._batch[:B], self._batch[B]
        real = self._rows < n                                          # (B,) rows that are samples
        ce = F.cross_entropy(self._logits(xt.index_select(0, idx)), yt.index_select(0, idx),
                             reduction="none")                         # (B,) per-sample loss
        loss = (ce * (real.to(self._tdtype) / n.to(self._tdtype))).sum()
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        self._total += (ce.detach() * real).sum()

    def warm_up(self, x, y):
        self._set_precision()
        self._ready(*self._to_device(x, y))

    def _ready(self, xt, yt):
        """Capture the step for this training set, once. The warm-up steps allocate the
        optimizer state and let cuBLAS choose its kernels outside the capture; ``_restore``
        then puts the parameters and the optimizer state back as they were."""
        if self._data is not None and self._data[0] is xt:
            return
        t0 = time.perf_counter()
        self._graph, self._data = None, (xt, yt)
        saved = self._snapshot()
        B = self.batch_size
        self._batch[:B] = torch.arange(B, device=self.device) % len(xt)
        self._batch[B] = B
        if self.capture:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP_STEPS):
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            for _ in range(self.WARMUP_STEPS):
                self._step()
        self._restore(saved)
        if self.capture:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):       # records the step; runs nothing
                self._step()
            self._graph = graph
        self.sync()
        self.capture_seconds = time.perf_counter() - t0

    def _snapshot(self):
        params = [p.detach().clone() for p in self._params]
        state = {i: {k: v.clone() for k, v in self._opt.state[p].items() if torch.is_tensor(v)}
                 for i, p in enumerate(self._params) if p in self._opt.state}
        return params, state

    def _restore(self, saved):
        """Parameters and optimizer state as ``_snapshot`` saw them, in place (the capture
        records these tensors' addresses). State that did not exist then is zeroed: Adam's
        step count and moments, a momentum buffer (mu * 0 + g is exactly the first step's g)."""
        params, state = saved
        with torch.no_grad():
            for i, (p, before) in enumerate(zip(self._params, params)):
                p.copy_(before)
                for k, v in self._opt.state[p].items():
                    if torch.is_tensor(v):
                        old = state.get(i, {}).get(k)
                        v.copy_(old) if old is not None else v.zero_()

    def _order_to_device(self, order):
        """The epoch's order as a ``(batches, B + 1)`` table on the device: each row one batch's
        sample indices (a short last batch padded with sample 0), then how many are real."""
        order = np.asarray(order, dtype=np.int64)
        B = self.batch_size
        batches = -(-len(order) // B)
        padded = np.zeros(batches * B, dtype=np.int64)
        padded[:len(order)] = order
        table = np.empty((batches, B + 1), dtype=np.int64)
        table[:, :B] = padded.reshape(batches, B)
        table[:, B] = B
        if len(order) % B:
            table[-1, B] = len(order) % B
        return torch.as_tensor(table, device=self.device)

    def train_epoch(self, x, y, order):
        self._set_precision()
        xt, yt = self._to_device(x, y)
        self._ready(xt, yt)
        table = self._order_to_device(order)
        total = self._epoch_loop(xt, yt, table)
        return float(total) / max(len(order), 1)            # waits for the last replay

    def _epoch_loop(self, xt, yt, table):
        self._total.zero_()
        for row in table:
            self._batch.copy_(row)                          # device to device, queued
            if self._graph is not None:
                self._graph.replay()
            else:
                self._step()
        return self._total

    def details(self):
        return {**super().details(), "capture_seconds": self.capture_seconds,
                "step": "CUDA graph, replayed per batch" if self.capture else "eager (capture off)",
                "short_last_batch": "padded to batch_size rows that weigh 0"}
