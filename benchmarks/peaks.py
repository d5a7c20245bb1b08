"""The session's peaks, measured: the peak-GEMM probe and the record it makes (``tracking/peaks.py``).

The probe (``peak_probe``, docs/performance.md "The peak probe"): ``repeats`` timed repeats of
an n x n GEMM, each as many GEMMs as fill ``seconds``, through numpy and through ``torch.mm``
with the same thread count. ``PEAK_RULE`` says which figure the roofline divides by. A
session probes at its start (``session_probes``, made into a ``Peaks`` record by ``record``)
and once at its end (``end_probe``). ``python -m benchmarks.peaks`` prints one session's probes.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from tracking.peaks import PROBE_FIGURES, Peak, Peaks, probe_metric

PROBE_N = 2048          # 2048^3: each GEMM lasts 0.05-0.5 s here, long past any turbo burst
PROBE = {"n": PROBE_N, "seconds": 0.3, "repeats": 5}
# a dry run's probe: 3 repeats of 0.01 s on a 256^3 GEMM, through numpy only, 0.1 s for the four
# probes here (the 512^3 one over five 0.05 s repeats took 2.2 s, and importing torch for it 1.7 s
# more). A dry run checks that everything runs: its figures are not a peak
DRY_RUN_PROBE = {"n": 256, "seconds": 0.01, "repeats": 3, "libraries": ("numpy",)}
PEAK_RULE = (f"the larger of the numpy and torch medians of {PROBE['repeats']} repeats of {PROBE['seconds']:g} s "
             f"on a {PROBE_N}^3 GEMM, measured at the session's start "
             "(the cells' rooflines are fixed before they run; the end probe shows the drift)")
DRY_RUN_RULE = (f"a dry run's, not a peak: the numpy median of {DRY_RUN_PROBE['repeats']} repeats of "
                f"{DRY_RUN_PROBE['seconds']:g} s on a {DRY_RUN_PROBE['n']}^3 GEMM, measured at the session's start; "
                "its shape peaks through numpy only")


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
        """Flat figures to log (``PROBE_FIGURES``): per library median and spread, and the
        rule's peak and spread."""
        return dict(zip(PROBE_FIGURES, (self.numpy_median, relative_spread(self.numpy), self.torch_median,
                                        relative_spread(self.torch), self.peak, self.spread), strict=True))


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


def peak_probe(dtype: str = "float32", threads: int | None = None, repeats: int = PROBE["repeats"],
               seconds: float = PROBE["seconds"], n: int = PROBE_N, libraries=("numpy", "torch")) -> PeakProbe:
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


def session_probes(needed, threads: int, dry_run: bool = False, log=print) -> dict[tuple[str, bool], PeakProbe]:
    """The start-of-session probes, by (dtype, on one thread): both dtypes on the session's
    threads, and on 1 thread for each dtype in ``needed`` (the dtypes of the session's
    single-threaded cells). On a 1-thread session the one probe serves both.
    A dry run probes a small GEMM briefly (``DRY_RUN_PROBE``): its figures are not a peak."""
    size = DRY_RUN_PROBE if dry_run else {}
    t0, probes = time.perf_counter(), {}
    for dtype in ("float32", "float64"):
        probes[dtype, False] = peak_probe(dtype, threads, **size)
        if dtype in needed:
            probes[dtype, True] = probes[dtype, False] if threads == 1 else peak_probe(dtype, 1, **size)
    log(f"peak probe: {len(set(map(id, probes.values())))} probes in {time.perf_counter() - t0:.1f} s")
    return probes


def end_probe(threads: int, dry_run: bool = False) -> PeakProbe:
    """The end-of-session probe: float32 on the session's threads only (the figure most cells
    divide by, and the one contention moves most), to show drift at a quarter of the cost."""
    return peak_probe("float32", threads, **(DRY_RUN_PROBE if dry_run else {}))


def record(probes: dict[tuple[str, bool], PeakProbe], gpu: dict | None = None, shapes: dict | None = None,
           rule: str = PEAK_RULE) -> Peaks:
    """The session's ``Peaks``: each start probe's peak, spread and library, the GPU's peaks
    per mode (``benchmarks/gpu.py``), the rule that says what the probes were (``PEAK_RULE``, a dry
    run's ``DRY_RUN_RULE``), and the shape peaks' GFLOP/s (``benchmarks/shape_peaks.py``)."""
    return Peaks(tuple(Peak(dtype, one, p.peak, p.spread, p.source) for (dtype, one), p in probes.items()),
                 dict(gpu or {}), rule, shapes={key: s.gflops() for key, s in (shapes or {}).items()})


def probe_metrics(probes: dict[tuple[str, bool], PeakProbe], when: str) -> dict[str, float]:
    """Every figure of ``probes`` as session metrics ``peak_probe/<when>/<key>/<figure>``."""
    return {probe_metric(when, dtype, one, name): v for (dtype, one), p in probes.items()
            for name, v in p.figures().items()}


if __name__ == "__main__":     # python -m benchmarks.peaks [threads [dtype ...]]: one session's probes
    import os
    import sys

    from benchmarks import threads as policy
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else policy.all_cores()
    policy.pin_threads(threads)
    for dt in sys.argv[2:] or ("float32", "float64"):
        for t in dict.fromkeys((threads, 1)):
            p = peak_probe(dt, t)
            print(f"{dt} threads={t}: numpy median {p.numpy_median:.1f} spread {relative_spread(p.numpy):.3f}, "
                  f"torch median {p.torch_median:.1f} spread {relative_spread(p.torch):.3f}; "
                  f"peak {p.peak:.1f} ({p.source}), load {os.getloadavg()[0]:.2f}", flush=True)
