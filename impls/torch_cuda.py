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

torch-cuda-graph runs the same math with the training step (gather the batch from the resident
set, forward, backward, optimizer) captured into a CUDA graph and replayed per batch: two
launches per batch (copy the batch's row of indices in, replay) instead of about forty. With
``steps_per_graph = K`` (a power of two) a graph holds K consecutive steps, each reading its
row of a table the graph owns; graphs of K, K/2, ..., 1 steps are captured, so any number of
batches is a sum of them (235 = 128 + 64 + 32 + 8 + 2 + 1) and no epoch length needs a capture
of its own. Measured on an H200 (docs/gpu.md), 256-step graphs gave no gain at batch 256 (the
GPU's own kernel time is the bound, not launches) and took 12 times longer to capture, so the
default is 1. The steps read fixed buffers, so a short last batch is padded to ``batch_size``
rows with sample 0 and those rows weigh nothing in the mean loss.
Capture happens once per resident training set, in ``warm_up`` (or the first epoch), after a
few warm-up steps on a side stream whose effect on the parameters and the optimizer state is
undone; its time is ``details()["capture_seconds"]`` and lands in the harness's
``compile_seconds`` (benchmarks/runner.py, ``measure_first_call``).

Why a hand-made graph and not ``torch.compile(mode="reduce-overhead")``: the captured work is
exactly the eager step (same kernels, so graph replay can be held to eager's numbers), its
capture is one measurable call with nothing else in it, and it needs no compiler toolchain at
run time. Inductor-compiled code captured the same way is measured as a study
(studies/gpu_profile.py; docs/gpu.md has the figures), not shipped.
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
    capture = True          # False: the same programs, run eagerly (how tests/test_gpu_cpu.py runs them on a CPU)
    steps_per_graph = 1     # steps per graph, a power of two: 1 replays per batch
    WARMUP_STEPS = 3

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        K = self.steps_per_graph
        if K < 1 or K & (K - 1):
            raise ValueError(f"steps_per_graph must be a power of two, not {K}")
        self._rows = torch.arange(self.batch_size, device=self.device)
        self._total = torch.zeros((), dtype=torch.float64, device=self.device)   # sum of per-sample losses
        self._data = None           # (x, y) tensors the captured steps read
        self._programs = {}         # steps -> (its table of batches, run it)
        self.capture_seconds = float("nan")

    @property
    def _graph(self):
        """The largest captured program's graph (None before capture, or without capture)."""
        program = self._programs.get(self.steps_per_graph)
        return program[2] if program else None

    def _optimizer_options(self):
        options = super()._optimizer_options()
        if self.optimizer == "adam" and self.capture:
            options["capturable"] = True    # Adam's step count and bias correction stay on the device
        return options

    def _step(self, batch):
        """One training step on ``batch`` (B sample indices, then how many are real):
        torch-cuda's loop body, with the mean loss taken over the real rows only."""
        xt, yt = self._data
        B = self.batch_size
        idx, n = batch[:B], batch[B]
        real = self._rows < n                                          # (B,) rows that are samples
        ce = F.cross_entropy(self._logits(xt.index_select(0, idx)), yt.index_select(0, idx),
                             reduction="none")                         # (B,) per-sample loss
        loss = (ce * (real.to(self._tdtype) / n.to(self._tdtype))).sum()
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        self._total += (ce.detach() * real).sum()

    def optimizer_step_site(self):
        return None                            # the step is replayed inside the captured graph

    def warm_up(self, x, y):
        self._set_precision()
        self._ready(*self._to_device(x, y))

    def _sizes(self):
        """The programs' lengths: steps_per_graph, then every smaller power of two."""
        K = self.steps_per_graph
        return [K >> i for i in range(K.bit_length())]

    def _ready(self, xt, yt):
        """Capture the programs for this training set, once. The warm-up steps allocate the
        optimizer state and let cuBLAS choose its kernels outside the capture; ``_restore``
        then puts the parameters and the optimizer state back as they were."""
        if self._data is not None and self._data[0] is xt:
            return
        t0 = time.perf_counter()
        self._programs, self._data = {}, (xt, yt)
        saved = self._snapshot()
        B = self.batch_size
        warm = torch.empty(B + 1, dtype=torch.int64, device=self.device)
        warm[:B] = torch.arange(B, device=self.device) % len(xt)
        warm[B] = B
        if self.capture:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP_STEPS):
                    self._step(warm)
            torch.cuda.current_stream().wait_stream(side)
        else:
            for _ in range(self.WARMUP_STEPS):
                self._step(warm)
        self._restore(saved)
        for steps in self._sizes():
            self._programs[steps] = self._program(steps)
        self.sync()
        self.capture_seconds = time.perf_counter() - t0

    def _program(self, steps):
        """``steps`` training steps, each on its row of the program's own table: (table, run,
        graph). Captured, ``run`` is one replay; without capture it runs the steps eagerly."""
        table = torch.zeros((steps, self.batch_size + 1), dtype=torch.int64, device=self.device)
        table[:, self.batch_size] = 1
        if not self.capture:
            return table, lambda: [self._step(row) for row in table], None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):           # records the steps; runs nothing
            for row in table:
                self._step(row)
        return table, graph.replay, graph

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
        """The epoch's batches as the largest programs that fit, in order: per program one
        device-to-device copy of its rows and one replay, all queued."""
        self._total.zero_()
        start = 0
        for steps in self._sizes():
            while len(table) - start >= steps:
                rows, run, _ = self._programs[steps]
                rows.copy_(table[start:start + steps])
                run()
                start += steps
        return self._total

    def details(self):
        return {**super().details(), "capture_seconds": self.capture_seconds,
                "step": (("CUDA graph, replayed per batch" if self.steps_per_graph == 1 else
                          f"CUDA graphs of up to {self.steps_per_graph} steps") if self.capture
                         else f"eager, in programs of up to {self.steps_per_graph} steps (capture off)"),
                "short_last_batch": "padded to batch_size rows that weigh 0"}
