"""Timed work: throughput passes, paired timing against the reference, the peak-GEMM probe.

The peak probe (``peak_probe``, docs/performance.md "The peak probe"): ``repeats``
timed repeats of an n x n GEMM, each as many GEMMs as fill ``seconds``, through numpy and
through ``torch.mm`` with the same thread count. ``PEAK_RULE`` says which figure the roofline
divides by. ``python -m benchmarks.timing`` prints one probe.

A throughput figure is samples/s over ``repeats`` passes of a fixed number of samples; the
length of a pass is calibrated, untimed, so that one pass takes about ``seconds``. With
``paired``, the reference (numpy-sample) is timed in passes alternating with the measured ones,
in the same process at the same moment: machine drift cancels in their ratio, which is what the
regression gate compares (docs/performance.md: unpaired ratios swung 20x -> 39x between
sessions on one machine).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

import impls
from benchmarks.config import Diverged
from benchmarks.runner import Prepared, epoch_order, loss_diverged


class Timed:
    """One network timed over fixed-length passes of the training data."""

    def __init__(self, net, p: Prepared, seconds: float):
        self.net, self.p = net, p
        B = p.config.batch_size
        probe = min(len(p.x), max(4 * B, 256))
        net.warm_up(p.x, p.y)
        net.sync()
        t0 = time.perf_counter()
        net.train_epoch(p.x, p.y, epoch_order(len(p.x), p.config.seed, 0, True)[:probe])
        rate = probe / max(time.perf_counter() - t0, 1e-9)
        self.n = int(min(len(p.x), max(B, math.ceil(rate * seconds / B) * B)))

    def rate(self, repeat: int) -> float:
        """Samples/s of one pass; Diverged if its loss blew up."""
        p = self.p
        order = epoch_order(len(p.x), p.config.seed, repeat, True)[:self.n]
        self.net.sync()            # a GPU's queue is empty before the clock starts and after it stops
        t0 = time.perf_counter()
        loss = self.net.train_epoch(p.x, p.y, order)
        self.net.sync()
        seconds = time.perf_counter() - t0
        if loss_diverged(loss, p.spec.sizes[-1]):
            raise Diverged(f"{p.config.impl} diverged in throughput repeat {repeat}: loss {loss:.4g}")
        return self.n / seconds


def measure_throughput(p: Prepared, repeats: int, seconds: float, reference: Prepared | None = None,
                       on_repeat=None, ready=None) -> tuple[list[float], list[float]]:
    """Samples/s of ``repeats`` timed passes and, with a prepared ``reference``, the
    reference's samples/s in passes alternating with them. ``on_repeat(r, seconds, rate)`` is
    called after each (outside the timed region); ``ready()`` once, after the untimed warm-up
    and calibration, before the first timed pass (a worker waits there for its tracking writes)."""
    timed = Timed(p.new(), p, seconds)
    ref = Timed(reference.new(), reference, seconds) if reference is not None else None
    if ready is not None:
        ready()
    rates, ref_rates = [], []
    for r in range(1, repeats + 1):
        t0 = time.perf_counter()
        if ref is not None:
            ref_rates.append(ref.rate(r))
        rates.append(timed.rate(r))
        if on_repeat is not None:
            on_repeat(r, time.perf_counter() - t0, rates[-1])
    return rates, ref_rates


def reference_config(p: Prepared):
    """The configuration a paired measurement times beside ``p``: numpy-sample at batch 1."""
    return p.config.replace(impl=impls.SPEEDUP_BASE, batch_size=1)


PROBE_N = 2048          # 2048^3: each GEMM lasts 0.05-0.5 s here, long past any turbo burst
DRY_RUN_PROBE = {"n": 512, "seconds": 0.05}   # a dry run's probe: about 2 s in all, as before the peak probe had repeats
PEAK_RULE = ("the larger of the numpy and torch medians, measured at the session's start "
             "(the cells' rooflines are fixed before they run; the end probe shows the drift)")


@dataclass
class PeakProbe:
    """One probe: GFLOP/s of each timed repeat, per library (an empty list: library absent)."""
    dtype: str
    threads: int
    n: int
    seconds: float
    numpy: list[float] = field(default_factory=list)
    torch: list[float] = field(default_factory=list)

    @property
    def numpy_median(self) -> float:
        return statistics.median(self.numpy) if self.numpy else float("nan")

    @property
    def torch_median(self) -> float:
        return statistics.median(self.torch) if self.torch else float("nan")

    @property
    def source(self) -> str:
        """The library whose median is the peak (``PEAK_RULE``)."""
        return "torch" if self.torch and not self.torch_median <= self.numpy_median else "numpy"

    @property
    def peak(self) -> float:
        return max(self.numpy_median, self.torch_median) if self.torch else self.numpy_median

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats of the library that sets ``peak``."""
        return relative_spread(getattr(self, self.source))

    def figures(self) -> dict[str, float]:
        """Flat figures to log: per library median and spread, and the rule's peak and spread."""
        return {"numpy_median": self.numpy_median, "numpy_spread": relative_spread(self.numpy),
                "torch_median": self.torch_median, "torch_spread": relative_spread(self.torch),
                "peak": self.peak, "spread": self.spread}


def relative_spread(values) -> float:
    return (max(values) - min(values)) / statistics.median(values) if values else float("nan")


def _repeats(gemm, flops: float, repeats: int, seconds: float) -> list[float]:
    """GFLOP/s of ``repeats`` repeats of ``gemm()``, each as many calls as fill ``seconds``."""
    gemm()                                          # untimed: first-call costs, the output's pages
    rates = []
    for _ in range(repeats):
        calls, t0 = 0, time.perf_counter()
        while True:
            gemm()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        rates.append(calls * flops / elapsed / 1e9)
    return rates


def peak_probe(dtype: str = "float32", threads: int | None = None, repeats: int = 5, seconds: float = 0.3,
               n: int = PROBE_N, libraries=("numpy", "torch")) -> PeakProbe:
    """The GEMM peak of this machine in ``dtype`` on ``threads`` threads (None: as the BLAS is
    pinned now): numpy's ``matmul`` and ``torch.mm`` into preallocated outputs, alternating
    library by library. torch is skipped where it is not installed."""
    from threadpoolctl import threadpool_info, threadpool_limits
    if threads is None:
        threads = max([lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] or [1])
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n)).astype(dtype) for _ in range(2))
    out = PeakProbe(dtype, threads, n, seconds)
    flops = 2.0 * n ** 3
    if "numpy" in libraries:
        c = np.empty_like(a)
        with threadpool_limits(limits=threads, user_api="blas"):
            out.numpy = _repeats(lambda: np.matmul(a, b, out=c), flops, repeats, seconds)
    if "torch" in libraries:
        try:
            import torch
        except ImportError:
            return out
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            tc = torch.empty_like(ta)
            out.torch = _repeats(lambda: torch.mm(ta, tb, out=tc), flops, repeats, seconds)
        finally:
            torch.set_num_threads(before)
    return out


def peak_key(dtype: str, one_thread: bool) -> str:
    """The key of a peak in a session's ``peaks`` dict (and its params): ``float32``,
    ``float32_1thread``; ``<key>_spread`` holds the probe's spread beside it."""
    return f"{dtype}_1thread" if one_thread else dtype


def session_probes(needed, threads: int, dry_run: bool = False, log=print) -> dict[str, PeakProbe]:
    """The start-of-session probes: both dtypes on the session's threads (their keys are what
    older sessions logged), and on 1 thread for each dtype in ``needed`` (the dtypes of the
    session's single-threaded cells). On a 1-thread session the one probe serves both keys.
    A dry run probes a 512^3 GEMM over 0.05 s repeats: its figures are not a peak."""
    size = DRY_RUN_PROBE if dry_run else {}
    t0, probes = time.perf_counter(), {}
    for dtype in ("float32", "float64"):
        probes[dtype] = peak_probe(dtype, threads, **size)
        if dtype in needed:
            probes[peak_key(dtype, True)] = probes[dtype] if threads == 1 else peak_probe(dtype, 1, **size)
    log(f"peak probe: {len(set(map(id, probes.values())))} probes in {time.perf_counter() - t0:.1f} s")
    return probes


def end_probe(threads: int, dry_run: bool = False) -> PeakProbe:
    """The end-of-session probe: float32 on the session's threads only (the figure most cells
    divide by, and the one contention moves most), to show drift at a quarter of the cost."""
    return peak_probe("float32", threads, **(DRY_RUN_PROBE if dry_run else {}))


def peak_figures(probes: dict[str, PeakProbe]) -> tuple[dict, dict]:
    """(peaks for the cells: ``key`` -> GFLOP/s and ``key_spread``; params of the session:
    ``peak_gemm_gflops_<key>`` (the peak the roofline used, as older sessions had it) and
    ``peak_gemm_spread_<key>``, ``peak_gemm_source_<key>`` (numpy | torch), the rule)."""
    peaks, params = {}, {"peak_gemm_rule": PEAK_RULE}
    for key, p in probes.items():
        peaks[key], peaks[f"{key}_spread"] = p.peak, p.spread
        params.update({f"peak_gemm_gflops_{key}": round(p.peak, 1), f"peak_gemm_spread_{key}": round(p.spread, 4),
                       f"peak_gemm_source_{key}": p.source})
    return peaks, params


def probe_metrics(probes: dict[str, PeakProbe], when: str) -> dict[str, float]:
    """Every figure of ``probes`` as session metrics ``peak_probe/<when>/<key>/<figure>``."""
    return {f"peak_probe/{when}/{key}/{name}": v for key, p in probes.items() for name, v in p.figures().items()}


if __name__ == "__main__":     # python -m benchmarks.timing [threads [dtype ...]]: one session's probes
    import os
    import sys

    from benchmarks import machine
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else (os.cpu_count() or 1)
    machine.pin_threads(threads)
    for dt in sys.argv[2:] or ("float32", "float64"):
        for t in dict.fromkeys((threads, 1)):
            p = peak_probe(dt, t)
            print(f"{dt} threads={t}: numpy median {p.numpy_median:.1f} spread {relative_spread(p.numpy):.3f}, "
                  f"torch median {p.torch_median:.1f} spread {relative_spread(p.torch):.3f}; "
                  f"peak {p.peak:.1f} ({p.source}), load {os.getloadavg()[0]:.2f}", flush=True)
