"""``python -m studies gemm-shapes``: the GEMMs of one training step, shape by shape, through
numpy (its BLAS), torch and JAX (XLA), each backend in a fresh process of its own.

The products are the shape peak's (``benchmarks/shape_peaks.py``, which a session measures for
numpy and torch): this study adds JAX, and prints each product's rate. For each backend it
prints the median GFLOP/s of repeated calls, and the step's GEMM time summed: the rate, in
samples/s, that those GEMMs alone would allow. A study of this machine, not a product feature.

Every backend is imported before its threads are pinned: ``pin_threads`` only reaches the pools
already loaded, and a torch imported after it runs on all its threads (an earlier version of
this study measured torch on two threads under a one-thread heading that way).
"""
from __future__ import annotations

import argparse

from benchmarks.shape_peaks import gemm_call, median_seconds, step_products

BACKENDS = ("numpy", "torch", "jax")


def products(sizes: tuple[int, ...], batch: int) -> list[tuple[str, int, int, int, bool, bool]]:
    """(label, m, k, n, transpose a, transpose b) of each GEMM of one step."""
    return [(p.label, p.m, p.k, p.n, p.a_transposed, p.b_transposed) for p in step_products(sizes, batch)]


def measure(backend: str, sizes: list[int], batch: int, threads: int, dtype: str, seconds: float) -> dict:
    """In a fresh process (``studies/fresh.py``): each product's median seconds per call."""
    import numpy as np
    import impls
    from benchmarks.threads import pin_threads, thread_settings
    if backend == "jax":
        impls.get("jax-cpu")                   # its module pins XLA's threads before the backend starts
    if backend == "torch":
        import torch  # noqa: F401 -- loaded first, so that pin_threads reaches its pool
    pin_threads(threads)
    rng = np.random.default_rng(0)
    result = {"threads": thread_settings()}
    for p in step_products(tuple(sizes), batch):
        call = _jax_call(p, dtype, rng) if backend == "jax" else gemm_call(backend, p, dtype, rng)
        result[p.label] = median_seconds(call, seconds)
    return result


def _jax_call(p, dtype: str, rng):
    """A no-argument callable that computes product ``p`` through one jitted XLA call and waits for it."""
    import jax
    import jax.numpy as jnp
    a = rng.standard_normal((p.k, p.m) if p.a_transposed else (p.m, p.k)).astype(dtype)
    b = rng.standard_normal((p.n, p.k) if p.b_transposed else (p.k, p.n)).astype(dtype)
    f = jax.jit(lambda x, y: (x.T if p.a_transposed else x) @ (y.T if p.b_transposed else y))
    A, B = jnp.asarray(a), jnp.asarray(b)
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
    shown = products(tuple(sizes), args.batch)
    rows = {}
    for backend in args.backends.split(","):
        got = fresh.run("studies.gemm_shapes:measure", {"backend": backend, "sizes": sizes, "batch": args.batch,
                                                       "threads": args.threads, "dtype": args.dtype,
                                                       "seconds": args.seconds})
        if "error" in got:
            print(f"{backend}: {got['error']}")
            continue
        print(f"{backend}: threads {got.pop('threads')}")
        rows[backend] = got
    print(f"GEMMs of one step: sizes {args.sizes}, batch {args.batch}, {args.dtype}, {args.threads} thread(s); "
          "GFLOP/s, median of 5 blocks")
    print(f"{'product':<12} {'m x k x n':>16} " + " ".join(f"{b:>8}" for b in rows))
    for label, m, k, n, _, _ in shown:
        flops = 2 * m * k * n
        print(f"{label:<12} {f'{m}x{k}x{n}':>16} " + " ".join(f"{flops / rows[b][label] / 1e9:8.1f}" for b in rows))
    print(f"{'step floor':<12} {'samples/s':>16} " +
          " ".join(f"{args.batch / sum(rows[b].values()):8,.0f}" for b in rows))
    return 0
