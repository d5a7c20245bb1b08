"""``python -m studies ddp-scaling``: what data parallelism buys torch-ddp on this machine.

Interleaved rounds, one epoch of ``--samples`` samples per case and round, all cases in this
process (the ranks are processes of their own; the process that holds them waits on a socket
while they train):

- torch-cpu at batch B on every core: the base of DDP's overhead;
- torch-ddp at world size 1, batch B (its rank on every core): DDP's overhead = this / torch-cpu;
- torch-ddp at world size N, global batch B (strong scaling, B/N per rank);
- torch-ddp at world size N, global batch N*B (weak scaling, B per rank).

Efficiency is throughput(N) / (N x throughput(1)), against world size 1 at the same per-rank
batch (strong: B, weak: B). Per case: the median samples/s and its per-round range, each rank's
step time at p50 and p95 (last round), and the all-reduce share: the gradient buckets' all-reduce
seconds, launch to completion, over the steps' seconds. Every case passes the harness's parity
check first (``runner.prepare``). The figures in docs/performance.md ("torch-ddp") come from it.
This is the measurement the bench's scaling section will make; it is not that section.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from benchmarks import datasets
from benchmarks.config import PRESETS
from benchmarks.runner import epoch_order, prepare
from benchmarks.threads import all_cores, pin_threads


def cases(world: int, batch: int) -> list[tuple[str, str, int | None, int]]:
    """(label, impl, world size, global batch)."""
    return [("torch-cpu", "torch-cpu", None, batch), ("ddp 1 rank", "torch-ddp", 1, batch),
            (f"ddp {world} ranks, strong", "torch-ddp", world, batch),
            (f"ddp {world} ranks, weak", "torch-ddp", world, world * batch)]


def measure(preset: str, world: int, batch: int, dtype: str, samples: int, rounds: int, data) -> dict:
    nets = {}
    for label, impl, ws, b in cases(world, batch):
        config = PRESETS[preset].replace(impl=impl, world_size=ws, batch_size=b, dtype=dtype, train_limit=samples)
        p = prepare(config, data)
        if not p.parity_ok:
            raise SystemExit(f"{label}: parity {p.parity_max_error:.1e} over the table; not timed")
        nets[label] = (p, p.new())
        nets[label][1].train_epoch(p.x, p.y, np.arange(min(len(p.x), 4 * b)))      # first call
    rates = {label: [] for label in nets}
    stats = {}
    for r in range(1, rounds + 1):
        order = epoch_order(samples, 0, r, True)
        for label, (p, net) in nets.items():
            t0 = time.perf_counter()
            net.train_epoch(p.x, p.y, order)
            rates[label].append(samples / (time.perf_counter() - t0))
            stats[label] = getattr(net, "last_epoch_stats", [])
    return {"rates": rates, "stats": stats}


def table(result: dict, world: int) -> list[str]:
    rates = {k: float(np.median(v)) for k, v in result["rates"].items()}
    labels = list(rates)
    base, one = rates[labels[0]], rates[labels[1]]
    lines = ["| case | samples/s (median) | per-round range | efficiency | rank step p50 / p95 ms | all-reduce share |",
             "|---|---|---|---|---|---|"]
    for label in labels:
        lo, hi = min(result["rates"][label]), max(result["rates"][label])
        eff = {labels[1]: f"DDP overhead: {one / base:.2f}x torch-cpu", labels[2]: f"strong {rates[label] / (world * one):.2f}",
               labels[3]: f"weak {rates[label] / (world * one):.2f}"}.get(label, "-")
        steps = "; ".join(f"r{s['rank']} {np.percentile(s['step_seconds'], 50) * 1e3:.2f} / "
                          f"{np.percentile(s['step_seconds'], 95) * 1e3:.2f}" for s in result["stats"][label]) or "-"
        shares = [sum(s["allreduce_seconds"]) / sum(s["step_seconds"]) for s in result["stats"][label]]
        share = ", ".join(f"{x:.0%}" for x in shares) or "-"
        lines.append(f"| {label} | {rates[label]:,.0f} | {lo:,.0f}-{hi:,.0f} | {eff} | {steps} | {share} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studies ddp-scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="hw1-q3")
    ap.add_argument("--world", type=int, default=2, help="N, the largest world size (default: 2)")
    ap.add_argument("--batch", type=int, default=256, help="B (default: 256)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    pin_threads(all_cores())
    data = datasets.load("fashion-mnist")
    before = os.getloadavg()[0]
    result = measure(args.preset, args.world, args.batch, args.dtype, args.samples, args.rounds, data)
    print(f"{args.preset} {args.dtype}, B={args.batch}, N={args.world}, {args.samples} samples x {args.rounds} "
          f"interleaved rounds, {all_cores()} threads in all; load average {before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print("\n".join(table(result, args.world)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
