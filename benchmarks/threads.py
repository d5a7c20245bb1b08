"""Threads: the one default thread count, and pinning.

``default_threads()`` is the count every entry point uses when none is given (``bench``,
``run``, ``regress``, ``gpu-check``, the pytest-benchmark suite and the studies).
Threads are pinned once per process, for every pool that may run: numpy's BLAS (through
threadpoolctl), numba's and torch's. Only backends already imported are touched, so pinning
never drags numba or torch into a numpy-only run.
"""
from __future__ import annotations

import functools
import os
import sys

from benchmarks.inventory import thread_settings

_LIMITS = None  # keeps threadpoolctl's limits alive for the process

# The workers inherit the user's environment as it is: the harness sets no thread-pool variable.
# It once set OMP_WAIT_POLICY=PASSIVE and OPENBLAS_THREAD_TIMEOUT=4 so that idle pool threads
# slept beside a busy loop; on a quiet machine that cost torch-cpu 2 threads half its rate at
# batch 256 and five sixths at batch 1, and numpy-batch 16% (docs/performance.md, "The workers'
# environment"). A loaded machine gets one thread instead (``choose_threads``).
THREADS_ENV = "BPB_THREADS"   # a session's count, for the processes it starts that are not its workers
FREE_CORES_FOR_TWO = 1.5   # fewer free cores than this (cores - 1-minute load average): 1 thread
PROBE_COLLAPSE = 1.2       # 2 threads gaining less than this over 1 thread's step rate: contended (quiet here: 1.8)


def choose_threads(cores: int, load: float | None, probe: float | None = None) -> tuple[int, str]:
    """The default thread count from the core count, the 1-minute load average and
    ``probe``, the 2-thread/1-thread rate ratio of a short step timing (None: not measured).
    The probe decides where there is one: it sees the machine as it is now, while the load
    average lags a minute both ways (a busy loop that just started, a run that just ended). One
    thread when it saw 2 threads lose; else one per free core, at least 2. Without a probe: one
    thread when other processes leave fewer than ``FREE_CORES_FOR_TWO`` cores."""
    if cores <= 1:
        return 1, "one core"
    seen = f"1-minute load average {load:.2f} on {cores} cores" if load is not None else f"{cores} cores, load unknown"
    free = cores - (load or 0.0)
    if probe is not None:
        if probe < PROBE_COLLAPSE:
            return 1, f"{seen}; 2 threads ran at {probe:.2f} of 1 thread's step rate: contended"
        threads = max(2, min(cores, int(free + 0.5)))
        return threads, f"{seen}; 2 threads ran at {probe:.2f} of 1 thread's step rate: {threads} threads"
    if free < FREE_CORES_FOR_TWO:
        return 1, f"{seen}: busy, fewer than {FREE_CORES_FOR_TWO:g} cores free"
    threads = max(1, min(cores, int(free + 0.5)))
    return threads, f"{seen}: {threads} free"


def probe_two_threads(rounds: int = 3, steps: int = 30) -> float:
    """2-thread/1-thread rate of a GEMM chain at hw1-q3's shapes (batch 256: the forward and
    backward products of 784-256-128-64-10), the median of ``rounds`` interleaved pairs; a
    contended machine reads well below 1 (docs/performance.md)."""
    import itertools
    import time

    import numpy as np
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    sizes = (784, 256, 128, 64, 10)
    ws = [rng.random((a, b), dtype=np.float32) for a, b in itertools.pairwise(sizes)]
    x = rng.random((256, 784), dtype=np.float32)

    def step() -> None:
        hs = [x]
        for w in ws:
            hs.append(hs[-1] @ w)
        g = hs[-1]
        for h, w in zip(reversed(hs[:-1]), reversed(ws)):
            h.T @ g
            g = g @ w.T

    def rate(n: int, limit: float = float("inf")) -> float:
        """Steps/s on ``n`` threads; after one step, stops at ``limit`` seconds (a collapse is
        obvious by then)."""
        with threadpool_limits(limits=n, user_api="blas"):
            done, t0 = 0, time.perf_counter()
            while done < steps and (done == 0 or time.perf_counter() - t0 < limit):
                step()
                done += 1
            return done / (time.perf_counter() - t0)

    rate(2, limit=0.0)                     # warm-up, one step: the pool's threads start
    ratios = []
    for _ in range(rounds):
        one = rate(1)
        ratios.append(rate(2, limit=4 * steps / one) / one)
        if ratios[-1] < PROBE_COLLAPSE / 2:
            break                          # a collapse: no need to confirm it
    return float(np.median(ratios))


def default_threads(cores: int | None = None, load: float | None = None, probe: float | None = None,
                    measure: bool = True) -> tuple[int, str]:
    """``choose_threads`` on this machine: its cores, its load average and (``measure``, when
    the load leaves cores free) a 1-vs-2-thread probe; the arguments replace what is read."""
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = None
    if probe is None and measure and cores > 1:
        probe = probe_two_threads()        # the load average lags: it cannot decide alone
    return choose_threads(cores, load, probe)


def inherited(environ=os.environ) -> int:
    """The count a session passed down in ``$BPB_THREADS`` (to the pytest-benchmark suite it
    starts), else ``default_threads()``'s, chosen once per process."""
    given = environ.get(THREADS_ENV)
    return int(given) if given else _default_once()


@functools.cache
def _default_once() -> int:
    return default_threads()[0]


def all_cores() -> int:
    """Every core, whatever the load. Not a default: for a measurement made at a fixed count so
    that its figures compare across runs (the studies' contests, ``python -m benchmarks.peaks``)."""
    return os.cpu_count() or 1


def pin_threads(n: int) -> dict:
    """Limit every loaded thread pool to ``n`` threads; returns ``thread_settings()``."""
    global _LIMITS
    from threadpoolctl import threadpool_limits
    _LIMITS = threadpool_limits(limits=n)
    if "numba" in sys.modules:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if "torch" in sys.modules:
        import torch
        torch.set_num_threads(n)
    if "impls.jax_cpu" in sys.modules:       # XLA: env flags, read when its backend starts
        sys.modules["impls.jax_cpu"].pin_threads(n)
    return thread_settings()
