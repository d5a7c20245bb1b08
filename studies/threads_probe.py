"""``python -m studies probe-threads``: how threads, and a busy machine, change small-batch
throughput. For each case (an implementation, a dtype and batch on hw1-q4's network, a thread
count, and for numba-batch its serial-loop or BLAS kernel), samples/s of timed passes, strictly
interleaved over ``--rounds`` rounds, each implementation in a process of its own (another
backend's idle thread pool in the same process changes the figures: docs/performance.md),
quiet and then beside ``--busy`` spinning processes. The figures in docs/performance.md ("Small
batches, threads and a busy machine") come from it, when numba-batch's kernels were serial and
parallel loops.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks import datasets
from benchmarks.threads import pin_threads
from benchmarks.inventory import inventory
from benchmarks.config import PRESETS
from benchmarks.runner import prepare
from benchmarks.timing import Timed
from studies import fresh

CASES = [("numba-batch", 1), ("numba-batch", 32), ("numba-batch", 256), ("torch-cpu", 1), ("torch-cpu", 32),
         ("numpy-batch", 32)]


def measure(rounds: int, seconds: float, data, only: str) -> dict:
    from impls import numba_batch
    timers = {}
    for name, batch in [c for c in CASES if c[0] == only]:
        config = PRESETS["hw1-q4"].replace(impl=name, dtype="float32", batch_size=batch)
        p = prepare(config, data)
        kernels = ("serial", "blas") if name == "numba-batch" else ("-",)
        for kernel in kernels:
            for threads in (1, 2):
                timers[(name, batch, kernel, threads)] = (Timed(p.new(), p, seconds), kernel, threads)
    rates = {key: [] for key in timers}
    for r in range(1, rounds + 1):
        for key, (timed, kernel, threads) in timers.items():
            pin_threads(threads)
            numba_batch.BLAS_FROM = 1 if kernel == "blas" else 10 ** 9
            rates[key].append(timed.rate(r))
    return {key: float(np.median(v)) for key, v in rates.items()}


def one_implementation(rounds: int, seconds: float, only: str) -> dict:
    """``measure`` for implementation ``only`` on 2 pinned threads, keys joined by ``|`` (JSON)."""
    pin_threads(2)
    result = measure(rounds, seconds, datasets.load("fashion-mnist"), only)
    return {"|".join(map(str, k)): v for k, v in result.items()}


def in_processes(rounds: int, seconds: float) -> dict:
    """``measure`` for each implementation, each in a fresh process."""
    out = {}
    for name in dict.fromkeys(n for n, _ in CASES):
        got = fresh.run("studies.threads_probe:one_implementation", {"rounds": rounds, "seconds": seconds, "only": name})
        if "error" in got:
            raise RuntimeError(got["error"])
        out.update({(n, int(b), k, int(t)): v for (n, b, k, t), v in ((key.split("|"), v) for key, v in got.items())})
    return out


def main(argv=None) -> int:
    from benchmarks.argtypes import positive_float, positive_int
    parser = argparse.ArgumentParser(prog="python -m studies probe-threads", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--seconds", type=positive_float, default=0.3, help="length of one timed pass")
    parser.add_argument("--busy", type=positive_int, default=1, help="spinning processes for the loaded phase")
    args = parser.parse_args(argv)
    quiet = in_processes(args.rounds, args.seconds)
    with fresh.busy(args.busy, settle=0.0):
        loaded = in_processes(args.rounds, args.seconds)
    print(f"median samples/s of {args.rounds} interleaved passes of {args.seconds} s; loaded = beside "
          f"{args.busy} busy loop(s); {inventory().get('cpu_model')}")
    print(f"{'implementation':<12} {'batch':>5} {'kernel':>8} {'threads':>7} {'quiet':>10} {'loaded':>10} {'loaded/quiet':>12}")
    for key in quiet:
        name, batch, kernel, threads = key
        print(f"{name:<12} {batch:>5} {kernel:>8} {threads:>7} {quiet[key]:>10,.0f} {loaded[key]:>10,.0f} "
              f"{loaded[key] / quiet[key]:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
