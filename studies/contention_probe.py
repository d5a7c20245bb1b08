"""``python -m studies probe-contention``: hw1-q3 (batch 256, Adam, float32) samples/s of
the minibatch implementations (and jax-cpu, a peer), at 1 and 2 threads and under
thread-pool wait policies, quiet and beside ``--busy`` busy loops. Each measurement is a fresh
process; rounds are strictly interleaved (every case quiet, then every case loaded, per round).
The figures in docs/performance.md ("Why two threads collapse beside a busy loop") come from it;
its numba-batch rows from when numba-batch ran a parallel loop kernel on numba's pool (today it
runs BLAS at batch 256, so the threading layer named in a case's label does not reach it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from studies import fresh

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
    ("torch-cpu t2 GOMP_SPINCOUNT=1000", "torch-cpu", 2, {"GOMP_SPINCOUNT": "1000"}),
    ("torch-cpu t2 GOMP_SPINCOUNT=10000", "torch-cpu", 2, {"GOMP_SPINCOUNT": "10000"}),
    ("torch-cpu t2 GOMP_SPINCOUNT=100000", "torch-cpu", 2, {"GOMP_SPINCOUNT": "100000"}),
    ("jax t1", "jax-cpu", 1, {}),
    ("jax t2", "jax-cpu", 2, {}),
]


def one(impl: str, threads: int, seconds: float, preset: str = "hw1-q3") -> dict:
    """samples/s of one pass of about ``seconds`` after an untimed warm-up, in this process."""
    from benchmarks import datasets
    from benchmarks.threads import pin_threads
    from benchmarks.config import PRESETS
    from benchmarks.runner import prepare
    from benchmarks.timing import Timed
    p = prepare(PRESETS[preset].replace(impl=impl), datasets.load("fashion-mnist"))
    pin_threads(threads)
    timed = Timed(p.new(), p, seconds)
    timed.rate(0)
    return {"samples_per_second": timed.rate(1)}


def in_process(case, seconds: float, preset: str = "hw1-q3") -> float:
    _, impl, threads, env = case
    out = fresh.run("studies.contention_probe:one", {"impl": impl, "threads": threads, "seconds": seconds,
                                                    "preset": preset}, env=env)
    if "error" in out:
        raise RuntimeError(out["error"])
    return out["samples_per_second"]


def main(argv=None) -> int:
    from benchmarks.argtypes import positive_float, positive_int
    parser = argparse.ArgumentParser(prog="python -m studies probe-contention", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--seconds", type=positive_float, default=0.5, help="length of the timed pass")
    parser.add_argument("--busy", type=positive_int, default=1, help="busy loops beside the loaded measurements")
    parser.add_argument("--preset", default="hw1-q3", choices=("hw1-q3", "hw1-q4"),
                        help="the network, batch size, optimizer and dtype measured (default: hw1-q3)")
    parser.add_argument("--only", default="", help="comma-separated substrings of the case labels")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or any(s in c[0] for s in args.only.split(","))]
    rates = {(c[0], phase): [] for c in cases for phase in ("quiet", "loaded")}
    loads = {"quiet": [], "loaded": []}
    for r in range(args.rounds):
        for phase in ("quiet", "loaded"):
            with fresh.busy(args.busy * (phase == "loaded"), settle=0.0):
                for case in cases:
                    loads[phase].append(os.getloadavg()[0])
                    rates[(case[0], phase)].append(in_process(case, args.seconds, args.preset))
        print(f"round {r + 1}: load {os.getloadavg()[0]:.2f} " + json.dumps({f"{k[0]}|{k[1]}": v[-1] for k, v in rates.items()}),
              file=sys.stderr, flush=True)
    print(f"{args.preset}: median samples/s of {args.rounds} rounds, each a fresh process; loaded = beside {args.busy} busy loop(s); "
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
