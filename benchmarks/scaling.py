"""The scaling section: what data parallelism buys torch-ddp on this machine, every case timed
in one worker, interleaved, so that a change of the machine's load falls on all of them alike.

The cases (``plan.scaling_cells``), on hw1-q3's network at its batch B, N = the cores this
process may use (at most 4), t = cores // N threads per rank:

- ``base``: torch-cpu at batch B on t threads, one rank's share of the cores;
- ``1-rank``: torch-ddp at world size 1, batch B, t threads. DDP's overhead is its samples/s over
  ``base``'s; it is the denominator of every efficiency;
- ``strong``: torch-ddp at world size k (2..N), global batch B (B/k per rank);
- ``weak``: torch-ddp at world size k, global batch k*B (B per rank);
- ``threads-k``: torch-cpu at batch B on k*t threads: the same cores as k ranks, as threads.

Efficiency is throughput(k) / (k x throughput(1)), labelled strong or weak; for ``threads-k``
the same formula over ``base``, so that ranks and threads compare on the same cores. Every case
passes the harness's parity check first (``runner.prepare``); one that fails it is FAILED and
never timed, and the others go on. Each round trains one epoch of
``min(scaling_samples, train_limit)`` samples per case, the rounds' orders the harness's. Per
rank, the step times (p50, p95) and the share of a step spent in the gradients' all-reduce
(launch to completion, over the steps' seconds) are pooled over every round.

A cell's MLflow run gets, besides its params: ``samples_per_second_median`` (and q1, q3), one
value per round (``round/samples_per_second``), ``scaling_efficiency`` (strong, weak, threads),
``ddp_overhead`` (1-rank), and for torch-ddp ``step_ms_p50``/``step_ms_p95`` (its slowest rank's),
``allreduce_share`` (the ranks' mean) and the same per rank (``rank<r>/...``).
"""
from __future__ import annotations

import traceback

import numpy as np

from benchmarks import memory, runner
from benchmarks.timing import timed_epoch
from benchmarks.cells import CellOutcome, cell_params, cell_tags, load_average, rate_summary, run_group
from benchmarks.inventory import inventory as machine_inventory
from benchmarks.plan import BenchOptions, Cell
from benchmarks.threads import all_cores
from tracking.peaks import Peaks


def group_runner(cells: list[Cell]):
    """What runs a group of cells in one process: ``run_scaling`` for the scaling section's,
    ``cells.run_group`` for the others (a group is one or the other: ``session.run_cells``)."""
    return run_scaling if cells and cells[0].kind == "scaling" else run_group


def shape(cells: list[Cell]) -> tuple[int, int]:
    """(N, t): the largest world size and the threads each rank gets."""
    world = max(c.config.world_size or 1 for c in cells)
    return world, max(1, all_cores() // world)


def cores_of(cell: Cell) -> int:
    """k: the ranks of a case, or the ranks' worth of threads of ``threads-k`` (1 for ``base``)."""
    if cell.role.startswith("threads-"):
        return int(cell.role.removeprefix("threads-"))
    return cell.config.world_size or 1


def threads_of(cell: Cell, per_rank: int) -> int:
    """The threads a case uses in all: t per rank, k*t for ``threads-k``, t for ``base``."""
    return per_rank * cores_of(cell)


def rank_stats(stats: list[dict]) -> dict:
    """Per rank and over the ranks: step time p50 and p95 in ms (the slowest rank's), the
    all-reduce share (the ranks' mean), from every step of every round."""
    steps: dict[int, list[float]] = {}
    reduce: dict[int, list[float]] = {}
    for s in stats:
        steps.setdefault(s["rank"], []).extend(s["step_seconds"])
        reduce.setdefault(s["rank"], []).extend(s["allreduce_seconds"])
    out = {}
    for r in sorted(steps):
        out[f"rank{r}/step_ms_p50"] = 1e3 * float(np.percentile(steps[r], 50))
        out[f"rank{r}/step_ms_p95"] = 1e3 * float(np.percentile(steps[r], 95))
        out[f"rank{r}/allreduce_share"] = float(sum(reduce[r]) / sum(steps[r]))
    if out:
        out["step_ms_p50"] = max(out[f"rank{r}/step_ms_p50"] for r in steps)
        out["step_ms_p95"] = max(out[f"rank{r}/step_ms_p95"] for r in steps)
        out["allreduce_share"] = float(np.mean([out[f"rank{r}/allreduce_share"] for r in steps]))
    return out


def run_scaling(cells: list[Cell], data, recorder, peaks: Peaks, options: BenchOptions,
                gpu_peaks: dict | None = None) -> None:
    """Prepare every case (parity), time them in interleaved rounds, then record one run per
    case. A case that fails to prepare, or raises in a round (a rank died), is FAILED with its
    reason and leaves the rounds; the others go on. KeyboardInterrupt propagates."""
    import torch
    world, per_rank = shape(cells)
    samples = min(options.scaling_samples, options.train_limit or options.scaling_samples, len(data.y_train))
    rounds = options.repeats
    failed: dict[Cell, tuple[str, str | None]] = {}
    checked: dict[Cell, dict] = {}          # its first-call seconds and parity error
    live: dict[Cell, tuple] = {}
    started, before = load_average(), torch.get_num_threads()
    memory.reset_peak_rss()
    for i, cell in enumerate(cells, start=1):
        recorder.progress(f"scaling: preparing {i}/{len(cells)}, {cell.title}")
        torch.set_num_threads(threads_of(cell, per_rank))    # torch-ddp gives each rank this // world size
        try:
            p = runner.prepare(cell.config, data)
            checked[cell] = {"compile_seconds": p.compile_seconds, "parity_max_error": p.parity_max_error}
            if not p.parity_ok:
                failed[cell] = (f"parity check failed: max relative error {p.parity_max_error:.3g} over the "
                                f"table ({cell.config.dtype})", None)
                continue
            net = p.new()
            net.warm_up(p.x, p.y)
            net.train_epoch(p.x, p.y, np.arange(min(len(p.x), 4 * cell.config.batch_size)))   # first call
            live[cell] = (p, net)
        except Exception as exc:
            failed[cell] = (f"{type(exc).__name__}: {exc}", traceback.format_exc())
    rates = {cell: [] for cell in live}
    stats = {cell: [] for cell in live}
    recorder.sync()                 # nothing is written while the rounds are timed
    try:
        for r in range(1, rounds + 1):
            order = runner.epoch_order(samples, cells[0].config.seed, r, True)
            for cell, (p, net) in list(live.items()):
                torch.set_num_threads(threads_of(cell, per_rank))
                try:
                    rates[cell].append(samples / timed_epoch(net, p, order, f"scaling round {r}"))
                except Exception as exc:      # this case is FAILED (a rank died); the others go on
                    failed[cell] = (f"{type(exc).__name__}: {exc} (in round {r})", traceback.format_exc())
                    del live[cell]
                    continue
                stats[cell] += getattr(net, "last_epoch_stats", [])
            recorder.progress(f"scaling: round {r}/{rounds} timed ({samples:,} samples per case)")
    finally:
        torch.set_num_threads(before)
    ended = load_average()
    medians = {cell.role: float(np.median(rates[cell])) for cell in live if cell.role in ("base", "1-rank")}
    inventory = machine_inventory()
    for cell in cells:
        params = cell_params(cell, peaks, options, gpu_peaks) | {
            "scaling_role": cell.role, "threads": threads_of(cell, per_rank), "threads_per_rank": per_rank,
            "batch_per_rank": cell.config.batch_size // (cell.config.world_size or 1), "rounds": rounds,
            "round_samples": samples}
        recorder.open(cell, params, cell_tags(cell, inventory) | {"bpb.scaling": cell.role, "bpb.peak_rss": (
            "the scaling section's own peak, all its cases in one worker (VmHWM, reset when the section "
            "started); torch-ddp's rank processes are not counted")})
        recorder.log(checked.get(cell, {}) | {"load_average_start": started, "load_average_end": ended,
                                               "peak_rss_mb": memory.peak_rss_mb()})
        if cell in failed:
            recorder.close(CellOutcome(cell, "FAILED", failed[cell][0]), failed[cell][1])
            continue
        out = CellOutcome(cell, summary=rate_summary(rates[cell]))
        out.summary.update(ratios(cell, out.summary["samples_per_second_median"], medians))
        recorder.log(out.summary | rank_stats(stats[cell]), series={"round/samples_per_second": rates[cell]})
        recorder.close(out)


def ratios(cell: Cell, median: float, medians: dict) -> dict:
    """``ddp_overhead`` for 1-rank (over base); ``scaling_efficiency``: k ranks over k x 1-rank,
    k threads' share over k x base (the same formula, each against its own one)."""
    one, base = medians.get("1-rank"), medians.get("base")
    if cell.role == "1-rank":
        return {"ddp_overhead": median / base} if base else {}
    if cell.role in ("strong", "weak") and one:
        return {"scaling_efficiency": median / (cores_of(cell) * one)}
    if cell.role.startswith("threads-") and base:
        return {"scaling_efficiency": median / (cores_of(cell) * base)}
    return {}
