"""``python -m studies gemm-shapes``: the GEMMs of one training step, shape by shape, through
numpy (its BLAS), torch and JAX (XLA), each backend in a fresh process of its own.

The products and the numpy and torch timings are the shape peak's (``benchmarks/shape_peaks.py``,
which a session measures): this study adds JAX, and prints each product's rate. For each backend
it prints the median GFLOP/s of repeated calls, and the step's GEMM time summed: the rate, in
samples/s, that those GEMMs alone would allow. A study of this machine, not a product feature.
"""
from __future__ import annotations

import argparse

from benchmarks.shape_peaks import median_seconds, operands, shape_peak, step_products

BACKENDS = ("numpy", "torch", "jax")


def measure(backend: str, sizes: list[int], batch: int, threads: int, dtype: str, seconds: float) -> dict:
    """In a fresh process (``studies/fresh.py``): each product's median seconds per call."""
    if backend != "jax":           # the session's own measurement, which sets the library's threads itself
        return shape_peak(sizes, batch, dtype, threads, seconds, libraries=(backend,)).seconds[backend]
    import numpy as np
    import impls
    from benchmarks.threads import pin_threads
    impls.get("jax-cpu")                   # its module pins XLA's threads before the backend starts
    pin_threads(threads)
    rng = np.random.default_rng(0)
    return {p.label: median_seconds(_jax_call(p, dtype, rng), seconds) for p in step_products(tuple(sizes), batch)}


def _jax_call(p, dtype: str, rng):
    """A no-argument callable that computes product ``p`` through one jitted XLA call and waits for it."""
    import jax
    import jax.numpy as jnp
    f = jax.jit(lambda x, y: (x.T if p.a_transposed else x) @ (y.T if p.b_transposed else y))
    A, B = (jnp.asarray(m) for m in operands(p, dtype, rng))
    return lambda: f(A, B).block_until_ready()


def main(argv: list[str]) -> int:
    from studies import fresh
    p = argparse.ArgumentParser(prog="python -m studies gemm-shapes", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="784,256,128,64,10", help="the net's layer sizes (default: hw1-q3's)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seconds", type=float, default=0.5, help="time per product and backend")
    p.add_argument("--backends", default=",".join(BACKENDS))
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = {}
    for backend in args.backends.split(","):
        got = fresh.run("studies.gemm_shapes:measure", {"backend": backend, "sizes": sizes, "batch": args.batch,
                                                       "threads": args.threads, "dtype": args.dtype,
                                                       "seconds": args.seconds})
        if "error" in got:
            print(f"{backend}: {got['error']}")
            continue
        rows[backend] = got
    print(f"GEMMs of one step: sizes {args.sizes}, batch {args.batch}, {args.dtype}, {args.threads} thread(s); "
          "GFLOP/s, median of 5 blocks")
    print(f"{'product':<12} {'m x k x n':>16} " + " ".join(f"{b:>8}" for b in rows))
    for q in step_products(tuple(sizes), args.batch):
        print(f"{q.label:<12} {f'{q.m}x{q.k}x{q.n}':>16} " + " ".join(f"{q.flops / rows[b][q.label] / 1e9:8.1f}"
                                                                     for b in rows))
    print(f"{'step floor':<12} {'samples/s':>16} " +
          " ".join(f"{args.batch / sum(rows[b].values()):8,.0f}" for b in rows))
    return 0
