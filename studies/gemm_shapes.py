"""``python -m studies gemm-shapes``: the GEMMs of one training step, shape by shape, through
numpy (its BLAS), torch and JAX (XLA), each backend in a fresh process of its own.

The peak probe (``benchmarks/peaks.py``) measures 2048^3 GEMMs; a minibatch step of these nets
multiplies much smaller matrices (hw1-q3 at batch 256: 256x784 by 784x256, and smaller), where
packing, blocking and threading overheads decide the rate. For each product of the step (the
ones ``impls.flops_per_sample`` counts, as ``studies/yardsticks/gemm_floor.py`` runs them):

- forward ``A_k @ W_k``: (B, n_in) by (n_in, n_out);
- weight gradient ``A_k^T @ D_k``: (n_in, B) by (B, n_out);
- input gradient ``D_k @ W_k^T``: (B, n_out) by (n_out, n_in), every layer but the first;

it prints the median GFLOP/s of repeated calls, and the step's GEMM time summed: the rate, in
samples/s, that those GEMMs alone would allow. A study of this machine, not a product feature.
"""
from __future__ import annotations

import argparse
import time

BACKENDS = ("numpy", "torch", "jax")


def products(sizes: tuple[int, ...], batch: int) -> list[tuple[str, int, int, int, bool, bool]]:
    """(label, m, k, n, transpose a, transpose b) of each GEMM of one step: an (m, k) by (k, n)
    product, with the operand stored transposed where the step has it so."""
    out = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        out.append((f"forward {i}", batch, n_in, n_out, False, False))
        out.append((f"dW {i}", n_in, batch, n_out, True, False))
        if i > 1:
            out.append((f"dA {i}", batch, n_out, n_in, False, True))
    return out


def measure(backend: str, sizes: list[int], batch: int, threads: int, dtype: str, seconds: float) -> dict:
    """In a fresh process (``studies/fresh.py``): each product's median seconds per call."""
    import numpy as np
    import impls
    from benchmarks.threads import pin_threads
    if backend == "jax":
        impls.get("jax-cpu")                   # its module pins XLA's threads before the backend starts
    pin_threads(threads)
    rng = np.random.default_rng(0)
    result = {}
    for label, m, k, n, ta, tb in products(tuple(sizes), batch):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
        call = _call(backend, a, b, ta, tb)
        call()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 10:          # calls per timed block: about 1/10 of the time
            call()
            reps += 1
        blocks = []
        for _ in range(10):
            t0 = time.perf_counter()
            for _ in range(reps):
                call()
            blocks.append((time.perf_counter() - t0) / reps)
        result[label] = float(np.median(blocks))
    return result


def _call(backend: str, a, b, ta: bool, tb: bool):
    """A no-argument callable that computes op(a) @ op(b) and waits for it."""
    if backend == "numpy":
        import numpy as np
        A, B = (a.T if ta else a), (b.T if tb else b)
        out = np.empty((A.shape[0], B.shape[1]), a.dtype)
        return lambda: np.matmul(A, B, out=out)
    if backend == "torch":
        import torch
        A, B = torch.from_numpy(a), torch.from_numpy(b)
        A, B = (A.T if ta else A), (B.T if tb else B)
        out = torch.empty((A.shape[0], B.shape[1]), dtype=A.dtype)
        return lambda: torch.mm(A, B, out=out)
    import jax
    import jax.numpy as jnp
    f = jax.jit(lambda x, y: (x.T if ta else x) @ (y.T if tb else y))
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
        rows[backend] = got
    print(f"GEMMs of one step: sizes {args.sizes}, batch {args.batch}, {args.dtype}, {args.threads} thread(s); "
          "GFLOP/s, median of 10 blocks")
    print(f"{'product':<12} {'m x k x n':>16} " + " ".join(f"{b:>8}" for b in rows))
    for label, m, k, n, _, _ in shown:
        flops = 2 * m * k * n
        print(f"{label:<12} {f'{m}x{k}x{n}':>16} " + " ".join(f"{flops / rows[b][label] / 1e9:8.1f}" for b in rows))
    print(f"{'step floor':<12} {'samples/s':>16} " +
          " ".join(f"{args.batch / sum(rows[b].values()):8,.0f}" for b in rows))
    return 0
