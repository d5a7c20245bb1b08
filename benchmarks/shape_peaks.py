"""The shape peak: the best rate numpy's and torch's GEMMs reach at a network's own shapes.

The peak probe (``benchmarks/peaks.py``) times 2048^3 GEMMs, the machine's roofline. A minibatch
step of these networks multiplies much smaller matrices (hw1-q3 at batch 256: 256x784 by 784x256
and smaller), where packing, blocking and threading overheads set the rate, so no family can
reach the roofline there. The shape peak times the products of one training step itself, as
``impls.flops_per_sample`` counts them:

- forward ``A_k @ W_k``: (B, n_in) by (n_in, n_out);
- weight gradient ``A_k^T @ D_k``: (n_in, B) by (B, n_out);
- input gradient ``D_k @ W_k^T``: (B, n_out) by (n_out, n_in), every layer but the first;

each through numpy's ``matmul`` and ``torch.mm`` into a preallocated output, with the operand
stored transposed where a step has it so. Each product counts at its faster library's median, and
the step's flops over the sum of those times is the shape peak in GFLOP/s: the rate at which a
family doing nothing but these GEMMs would train. A batch cell's fraction of it
(``shape_fraction``) says how far the family is from what those libraries can do at these
shapes; a peer with GEMMs of its own (jax-cpu's XLA) is not bound by it.
``python -m benchmarks.shape_peaks [batch [threads]]`` prints hw1-q3's products.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from tracking.peaks import shape_key

BLOCKS = 5                  # timed blocks per product and library; the median counts
SECONDS = 0.04              # per product and library (about 1 s for hw1-q3's eleven products)
DRY_RUN_SECONDS = 0.004


@dataclass(frozen=True)
class Product:
    label: str              # "forward 1", "dW 1", "dA 2", ...
    m: int
    k: int
    n: int
    a_transposed: bool      # the left operand is stored (k, m) and used transposed
    b_transposed: bool

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def step_products(sizes, batch: int) -> list[Product]:
    """The GEMMs of one training step of a network with layer ``sizes`` at batch ``batch``."""
    out = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        out.append(Product(f"forward {i}", batch, n_in, n_out, False, False))
        out.append(Product(f"dW {i}", n_in, batch, n_out, True, False))
        if i > 1:
            out.append(Product(f"dA {i}", batch, n_out, n_in, False, True))
    return out


@dataclass(frozen=True)
class ShapePeak:
    sizes: tuple[int, ...]
    batch: int
    dtype: str
    seconds: dict            # library -> {product label: median seconds per call}

    @property
    def key(self) -> str:
        return shape_key(self.sizes, self.batch, self.dtype)

    def step_seconds(self, library: str | None = None) -> float:
        """One step's GEMM time: each product at ``library``'s median, or at the faster one's."""
        if library is not None:
            return sum(self.seconds[library].values())
        return sum(min(by[label] for by in self.seconds.values()) for label in next(iter(self.seconds.values())))

    def gflops(self, library: str | None = None) -> float:
        flops = sum(p.flops for p in step_products(self.sizes, self.batch))
        return flops / self.step_seconds(library) / 1e9

    def figures(self) -> dict[str, float]:
        """What a session logs of it: the peak, and each library's rate over the whole step."""
        return {"gflops": self.gflops(), **{f"{lib}_gflops": self.gflops(lib) for lib in self.seconds}}


def median_seconds(call, seconds: float) -> float:
    """Median seconds per ``call()`` over ``BLOCKS`` blocks, each about ``seconds / BLOCKS``."""
    call()                                              # untimed: first-call costs
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / BLOCKS:
        call()
        reps += 1
    blocks = []
    for _ in range(BLOCKS):
        t0 = time.perf_counter()
        for _ in range(reps):
            call()
        blocks.append((time.perf_counter() - t0) / reps)
    return statistics.median(blocks)


def operands(p: Product, dtype: str, rng):
    """Random numpy operands of product ``p``, each stored as a step stores it (transposed or not)."""
    a = rng.standard_normal((p.k, p.m) if p.a_transposed else (p.m, p.k)).astype(dtype)
    b = rng.standard_normal((p.n, p.k) if p.b_transposed else (p.k, p.n)).astype(dtype)
    return a, b


def _gemm(library: str, p: Product, dtype: str, rng):
    """A no-argument callable computing product ``p`` through numpy or torch into a preallocated output."""
    a, b = operands(p, dtype, rng)
    if library == "torch":
        import torch
        a, b = torch.from_numpy(a), torch.from_numpy(b)
    A, B = (a.T if p.a_transposed else a), (b.T if p.b_transposed else b)
    if library == "torch":
        out = torch.empty((p.m, p.n), dtype=A.dtype)
        return lambda: torch.mm(A, B, out=out)
    out = np.empty((p.m, p.n), dtype)
    return lambda: np.matmul(A, B, out=out)


def shape_peak(sizes, batch: int, dtype: str, threads: int, seconds: float = SECONDS,
               libraries=("numpy", "torch")) -> ShapePeak:
    """Each product of one step through each of ``libraries`` present, library by library, on
    ``threads`` threads: numpy's BLAS limited as the peak probe limits it, torch set and
    restored. torch's count is set here, not left to ``pin_threads``, which only reaches pools
    already loaded."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    products = step_products(tuple(sizes), batch)
    measured = {}
    if "numpy" in libraries:
        with threadpool_limits(limits=threads, user_api="blas"):
            measured["numpy"] = {p.label: median_seconds(_gemm("numpy", p, dtype, rng), seconds) for p in products}
    if "torch" in libraries:
        try:
            import torch
        except ImportError:                 # optional: numpy alone without it
            return ShapePeak(tuple(sizes), batch, dtype, measured)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            measured["torch"] = {p.label: median_seconds(_gemm("torch", p, dtype, rng), seconds) for p in products}
        finally:
            torch.set_num_threads(before)
    return ShapePeak(tuple(sizes), batch, dtype, measured)


def session_shape_peaks(shapes, threads: int, dry_run: bool = False, log=print) -> dict[str, ShapePeak]:
    """The shape peak of every (sizes, batch, dtype) in ``shapes`` on the session's threads, by
    ``shape_key``; a dry run's through numpy only (importing torch for it took longer than the probe)."""
    t0 = time.perf_counter()
    out = {}
    for sizes, batch, dtype in sorted(set(shapes)):
        p = shape_peak(sizes, batch, dtype, threads, DRY_RUN_SECONDS if dry_run else SECONDS,
                       ("numpy",) if dry_run else ("numpy", "torch"))
        out[p.key] = p
    if out:
        log(f"shape peaks: {len(out)} network shapes in {time.perf_counter() - t0:.1f} s; " + ", ".join(
            f"{key} {p.gflops():.0f} GFLOP/s" for key, p in out.items()) +
            (f" (a dry run's: {1e3 * DRY_RUN_SECONDS:g} ms per product through numpy, not a peak)" if dry_run else ""))
    return out


if __name__ == "__main__":     # python -m benchmarks.shape_peaks [batch [threads]]: hw1-q3's products
    import sys

    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    peak = shape_peak((784, 256, 128, 64, 10), batch, "float32", int(sys.argv[2]) if len(sys.argv) > 2 else 1, 0.5)
    for p in step_products(peak.sizes, batch):
        print(f"{p.label:<10} {p.m}x{p.k}x{p.n}: " + ", ".join(
            f"{lib} {p.flops / peak.seconds[lib][p.label] / 1e9:.1f}" for lib in peak.seconds) + " GFLOP/s")
    print(f"shape peak {peak.gflops():.1f} GFLOP/s: " +
          ", ".join(f"{lib} alone {peak.gflops(lib):.1f}" for lib in peak.seconds))
