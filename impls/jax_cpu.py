"""jax-cpu: the network in JAX on the CPU, one jitted ``lax.scan`` over the batches of an epoch.

A peer rather than a family: what a user who reaches for JAX would write. The math is
impls/numpy_batch.py's (mean cross-entropy of log-softmax over the batch, gradients by
``jax.grad``) and the optimizers are impls/optim.py's formulas written in jax.numpy, so parity
is held to the same table (tests/test_conformance.py).

- The epoch: the full batches go through ``lax.scan`` CHUNK batches at a time, the rest one
  jitted step each (a short last batch included); ``warm_up`` compiles them all. The training set is put on the device once per training set and indexed with the
  epoch's order inside the program, like impls/torch_impl.py's resident tensors.
- float64: JAX computes in float32 unless ``jax_enable_x64`` is set, and the switch must be set
  before any array is made (arrays made before keep 32 bits). It is set when this module is
  imported; every array here is created with an explicit dtype, so float32 runs stay float32
  (Python scalars are weakly typed and do not promote).
- Threads: XLA takes no thread count. Its CPU pool runs on every core the process may use,
  and threadpoolctl, ``torch.set_num_threads`` and the old one-thread ``XLA_FLAGS``
  (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) do not confine it: with
  those flags a jitted 256x784x256 GEMM here spent 1.87 CPU seconds per wall second
  (docs/performance.md, "jax-cpu on one thread"). ``pin_threads`` (called by
  benchmarks/threads.py ``pin_threads``) narrows the CPU affinity of every thread of the process
  to its first ``n`` allowed CPUs, before or after the backend starts. That confines the whole
  process, which is why a session runs each implementation in a worker of its own
  (benchmarks/workers.py).
"""
from __future__ import annotations

import os
import time
from functools import partial

import numpy as np

# batches per scanned program: an epoch is len // (CHUNK * B) scans and single steps for the
# rest, so every epoch and every throughput pass reuses the same few compiled programs
# (a scan over the whole epoch compiles once per epoch length: the harness's probe and its
# timed passes have different lengths, and the first timed pass would include a compile)
CHUNK = 32
_THREADS = {"setting": "every core the process may use (not pinned)"}
# the CPUs this process was given, before any pinning: a later, wider pin gives them back
_GIVEN = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pin_threads(n: int) -> str:
    """Confine this process, XLA's pool included, to ``n`` CPUs (the first ``n`` it was given) by
    CPU affinity, or give every CPU back when ``n`` covers them; returns what XLA will use, in
    words. Where the system has no affinity call, nothing is confined and the words say so."""
    if not _GIVEN:
        _THREADS["setting"] = "every core: this system cannot confine XLA (no CPU affinity)"
        return _THREADS["setting"]
    allowed = _GIVEN[:max(1, n)]
    if sorted(os.sched_getaffinity(0)) != allowed:
        for tid in os.listdir("/proc/self/task"):   # threads started earlier keep their own mask
            try:
                os.sched_setaffinity(int(tid), allowed)
            except OSError:                          # the thread ended meanwhile
                pass
    _THREADS["setting"] = f"{len(allowed)} (CPU affinity {','.join(map(str, allowed))})"
    return _THREADS["setting"]


import jax  # noqa: E402  (kept below pin_threads, which needs no jax)

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
from jax import lax

from impls.base import Implementation


def _logits(params, h, activation):
    for k, (W, b) in enumerate(params):
        h = h @ W + b
        if k < len(params) - 1:
            h = jax.nn.sigmoid(h) if activation == "sigmoid" else jnp.maximum(h, 0)
    return h


def _loss(params, xb, yb, activation):
    logp = jax.nn.log_softmax(_logits(params, xb, activation))
    return -jnp.take_along_axis(logp, yb[:, None], axis=1).mean()


def _update(kind, lr, momentum, betas, eps, params, state, grads):
    """impls/optim.py's formulas over the parameter pytree; ``state`` is (t, m, v)."""
    t, m, v = state
    if kind == "sgd" and momentum == 0:
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), state
    if kind == "sgd":
        v = jax.tree.map(lambda vk, g: momentum * vk + g, v, grads)
        return jax.tree.map(lambda p, vk: p - lr * vk, params, v), (t, m, v)
    b1, b2 = betas
    t = t + 1
    dtype = jax.tree.leaves(params)[0].dtype
    bc1 = 1 - jnp.power(jnp.asarray(b1, dtype), t.astype(dtype))
    bc2 = 1 - jnp.power(jnp.asarray(b2, dtype), t.astype(dtype))
    m = jax.tree.map(lambda mk, g: b1 * mk + (1 - b1) * g, m, grads)
    v = jax.tree.map(lambda vk, g: b2 * vk + (1 - b2) * (g * g), v, grads)
    params = jax.tree.map(lambda p, mk, vk: p - lr * (mk / bc1) / (jnp.sqrt(vk / bc2) + eps), params, m, v)
    return params, (t, m, v)


def _step(static, carry, idx, x, y):
    activation, opt = static
    params, state = carry
    xb, yb = x[idx], y[idx]
    loss, grads = jax.value_and_grad(_loss)(params, xb, yb, activation)
    params, state = _update(*opt, params, state, grads)
    return (params, state), loss


@partial(jax.jit, static_argnums=0, donate_argnums=1)
def _epoch(static, carry, batches, x, y):
    """``batches`` (n_batches, B) sample indices: one scan, the per-batch mean losses out."""
    return lax.scan(lambda c, idx: _step(static, c, idx, x, y), carry, batches)


@partial(jax.jit, static_argnums=0, donate_argnums=1)
def _one(static, carry, idx, x, y):
    return _step(static, carry, idx, x, y)


@partial(jax.jit, static_argnums=0)
def _proba(activation, params, x):
    return jax.nn.softmax(_logits(params, x, activation), axis=1)


class JaxCPU(Implementation):
    name = "jax-cpu"
    description = "JAX on the CPU: jit, the epoch as one lax.scan over its batches"
    family = "peer"

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        dt = self.dtype
        self._params = [(jnp.asarray(np.asarray(W), dtype=dt), jnp.asarray(np.asarray(b), dtype=dt))
                        for W, b in params]
        zeros = jax.tree.map(jnp.zeros_like, self._params)
        self._state = (jnp.zeros((), dtype=jnp.int32), zeros, jax.tree.map(jnp.zeros_like, self._params))
        self._static = (spec.activation, (self.optimizer, self.lr, self.momentum, self.betas, self.eps))
        self._resident = (None, None, None)

    def _to_device(self, x, y):
        src, xj, yj = self._resident
        if src is not x:
            xj = jnp.asarray(np.asarray(x), dtype=self.dtype)
            yj = jnp.asarray(np.asarray(y, dtype=np.int32))
            self._resident = (x, xj, yj)
        return xj, yj

    def train_epoch(self, x, y, order):
        xj, yj = self._to_device(x, y)
        order = np.asarray(order, dtype=np.int32)
        B, K = self.batch_size, CHUNK
        full = len(order) // B
        carry, losses = (self._params, self._state), []
        for c in range(full // K):                           # scans of CHUNK batches
            batches = order[c * K * B:(c + 1) * K * B].reshape(K, B)
            carry, loss = _epoch(self._static, carry, jnp.asarray(batches), xj, yj)
            losses.append((loss, B))
        for start in range((full // K) * K * B, len(order), B):   # the rest, one step each
            idx = order[start:start + B]
            carry, loss = _one(self._static, carry, jnp.asarray(idx), xj, yj)
            losses.append((loss, len(idx)))
        self._params, self._state = carry
        total = sum(float(np.asarray(loss, dtype=np.float64).sum()) * n for loss, n in losses)
        return total / max(len(order), 1)

    def warm_up(self, x, y):
        """Compiles the programs an epoch over ``x`` calls (the CHUNK-batch scan, the one-batch
        step, the short last batch's step) on copies of the state, outside the timed epochs;
        the parameters and optimizer state are left as they were."""
        t0 = time.perf_counter()
        xj, yj = self._to_device(x, y)
        n, B = len(x), self.batch_size
        calls = []
        if n >= CHUNK * B:
            calls.append((_epoch, np.zeros((CHUNK, B), dtype=np.int32)))
        calls += [(_one, np.zeros(size, dtype=np.int32)) for size in {min(B, n), n % B} if size]
        for fn, idx in calls:
            carry = jax.tree.map(jnp.copy, (self._params, self._state))
            jax.block_until_ready(fn(self._static, carry, jnp.asarray(idx), xj, yj))
        self._warm_up_seconds = time.perf_counter() - t0

    def predict_proba(self, x):
        return np.asarray(_proba(self.spec.activation, self._params, jnp.asarray(np.asarray(x), dtype=self.dtype)))

    def get_params(self):
        return [(np.array(W), np.array(b)) for W, b in self._params]

    def details(self):
        out = {"jax_version": jax.__version__, "jax_threads": _THREADS["setting"]}
        if hasattr(self, "_warm_up_seconds"):
            out["jax_warm_up_seconds"] = self._warm_up_seconds
        return out
