"""``python -m studies.contention_probe``: hw1-q3 (batch 256, Adam, float32) samples/s of
the minibatch implementations (and a jitted JAX step, a peer), at 1 and 2 threads and under
thread-pool wait policies, quiet and beside ``--busy`` busy loops. Each measurement is a fresh
process; rounds are strictly interleaved (every case quiet, then every case loaded, per round).
The figures in docs/performance.md ("Why two threads collapse beside a busy loop") come from it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
# (label, implementation, threads, extra environment of the measuring process)
CASES = [
    ("numpy-batch t1", "numpy-batch", 1, {}),
    ("numpy-batch t2", "numpy-batch", 2, {}),
    ("numpy-batch t2 OPENBLAS_THREAD_TIMEOUT=4", "numpy-batch", 2, {"OPENBLAS_THREAD_TIMEOUT": "4"}),
    ("numba-batch t1", "numba-batch", 1, {}),
    ("numba-batch t2 omp", "numba-batch", 2, {}),
    ("numba-batch t2 omp PASSIVE", "numba-batch", 2, PASSIVE),
    ("numba-batch t2 workqueue", "numba-batch", 2, {"NUMBA_THREADING_LAYER": "workqueue"}),
    ("torch-cpu t1", "torch-cpu", 1, {}),
    ("torch-cpu t2", "torch-cpu", 2, {}),
    ("torch-cpu t2 PASSIVE", "torch-cpu", 2, PASSIVE),
    ("jax t1", "jax", 1, {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}),
    ("jax t2", "jax", 2, {}),
]


def jax_rate(x, y, seconds: float) -> float:
    """A jitted hw1-q3 step (ReLU MLP, softmax cross-entropy, Adam), the peer's way."""
    import jax
    import jax.numpy as jnp
    sizes, batch = (784, 256, 128, 64, 10), 256
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes))
    params = [(jax.random.normal(k, (a, b), jnp.float32) * np.sqrt(2 / a), jnp.zeros(b, jnp.float32))
              for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def loss(params, xb, yb):
        h = xb
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), yb[:, None], axis=1))

    @jax.jit
    def step(params, m, v, t, xb, yb):
        g = jax.grad(loss)(params, xb, yb)
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        lr = 1e-3 * jnp.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        params = jax.tree_util.tree_map(lambda p, m, v: p - lr * m / (jnp.sqrt(v) + 1e-8), params, m, v)
        return params, m, v

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    m, v = zeros, zeros
    xs, ys = jnp.asarray(x[:batch * 64]), jnp.asarray(y[:batch * 64].astype(np.int32))

    def run(steps: int):
        nonlocal params, m, v
        for s in range(steps):
            i = (s % 64) * batch
            params, m, v = step(params, m, v, s + 1.0, xs[i:i + batch], ys[i:i + batch])
        jax.block_until_ready(params)

    run(4)
    t0 = time.perf_counter()
    run(8)
    steps = max(8, int(8 * seconds / (time.perf_counter() - t0)))
    t0 = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - t0)


def one(impl: str, threads: int, seconds: float) -> float:
    """samples/s of one pass of about ``seconds`` after an untimed warm-up, in this process."""
    from benchmarks import datasets, machine
    data = datasets.load("fashion-mnist")
    if impl == "jax":
        return jax_rate(data.features("train", "float32", None), data.labels("train", None), seconds)
    from benchmarks.config import PRESETS
    from benchmarks.runner import prepare
    from benchmarks.timing import Timed
    p = prepare(PRESETS["hw1-q3"].replace(impl=impl), data)
    machine.pin_threads(threads)
    timed = Timed(p.new(), p, seconds)
    timed.rate(0)
    return timed.rate(1)


def in_process(case, seconds: float) -> float:
    _, impl, threads, env = case
    out = subprocess.run([sys.executable, "-m", "studies.contention_probe", "--one", impl, "--threads", str(threads),
                          "--seconds", str(seconds)], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return float(out.stdout.splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="length of the timed pass")
    parser.add_argument("--busy", type=int, default=1, help="busy loops beside the loaded measurements")
    parser.add_argument("--only", default="", help="comma-separated substrings of the case labels")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(one(args.one, args.threads, args.seconds))
        return 0
    cases = [c for c in CASES if not args.only or any(s in c[0] for s in args.only.split(","))]
    rates = {(c[0], phase): [] for c in cases for phase in ("quiet", "loaded")}
    loads = {"quiet": [], "loaded": []}
    for r in range(args.rounds):
        for phase in ("quiet", "loaded"):
            spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy * (phase == "loaded"))]
            try:
                for case in cases:
                    loads[phase].append(os.getloadavg()[0])
                    rates[(case[0], phase)].append(in_process(case, args.seconds))
            finally:
                for s in spin:
                    s.kill()
                    s.wait()
        print(f"round {r + 1}: load {os.getloadavg()[0]:.2f} " + json.dumps({f"{k[0]}|{k[1]}": v[-1] for k, v in rates.items()}),
              file=sys.stderr, flush=True)
    print(f"median samples/s of {args.rounds} rounds, each a fresh process; loaded = beside {args.busy} busy loop(s); "
          f"1-min load average quiet {min(loads['quiet']):.2f}-{max(loads['quiet']):.2f}, "
          f"loaded {min(loads['loaded']):.2f}-{max(loads['loaded']):.2f}")
    print("| case | quiet | loaded | loaded/quiet (median of rounds) |\n|---|---|---|---|")
    for case in cases:
        q, lo = np.array(rates[(case[0], "quiet")]), np.array(rates[(case[0], "loaded")])
        print(f"| {case[0]} | {np.median(q):,.0f} | {np.median(lo):,.0f} | {np.median(lo / q):.2f} |")
    print(json.dumps({f"{k[0]}|{k[1]}": v for k, v in rates.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
