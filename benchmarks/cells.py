"""Run one cell, and a group of cells: validate, warm up, time, and report what happened.

Every cell goes through the same steps: ``runner.prepare`` (first-call cost on a throwaway
instance, then one optimizer step against the float64 reference; a cell that fails parity is
FAILED and never timed), then the timed work: ``timing.measure_throughput`` for a throughput
cell, ``runner.train`` on the same prepared configuration for an accuracy cell.

This module owns the failure policy: a cell that raises is recorded FAILED with its reason,
and the group goes on; Ctrl-C (KeyboardInterrupt) stops the group. What a cell measures goes
to a *recorder*, which writes it to MLflow in the main process (``benchmarks.session``) or
sends it there from a worker process (``benchmarks.workers``)::

    recorder.open(cell, params, tags)        # a RUNNING child run
    recorder.log(metrics, tags, step)        # as the cell goes
    recorder.close(outcome, details)         # FINISHED or FAILED, with the reason
"""
from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

import impls
from benchmarks import machine, runner, timing
from benchmarks.plan import BenchOptions, Cell
from reports.stats import quartiles

EXAMPLE_INDICES = (0, 1, 2)   # the homework's three test images: ankle boot, pullover, trouser


@dataclass
class CellOutcome:
    cell: Cell
    status: str = "FINISHED"      # FINISHED | FAILED | KILLED
    reason: str | None = None
    summary: dict = field(default_factory=dict)
    proba: np.ndarray | None = None   # accuracy cells: predictions for EXAMPLE_INDICES


def cell_tags(cell: Cell, inventory: dict) -> dict:
    c = cell.config
    cls = impls.get(c.impl)
    return {**{f"machine.{k}": v for k, v in inventory.items()},
            "mlflow.note.content": f"{c.impl}: {cls.description}",   # the run's description in the UI
            "bpb.cell": cell.name, "bpb.cell_kind": cell.kind, "implementation": c.impl,
            "device": cls.device, "dtype": c.dtype, "preset": c.preset,
            "batch_size": c.batch_size, "git_commit": inventory.get("git_commit", "unknown")}


def run_cell(cell: Cell, data, recorder, peak_gflops: float, options: BenchOptions) -> CellOutcome:
    """Validate, warm up, time; logs to ``recorder`` as it goes. Exceptions propagate."""
    c = cell.config
    out = CellOutcome(cell)
    p = runner.prepare(c, data)
    flops = impls.flops_per_sample(p.spec)
    recorder.log({"compile_seconds": p.compile_seconds, "parity_max_error": p.parity_max_error,
                  "flops_per_sample": flops, "peak_gemm_gflops": peak_gflops})
    out.summary.update(compile_seconds=p.compile_seconds, parity_max_error=p.parity_max_error)
    if not p.parity_ok:
        tol = impls.PARITY_TOLERANCE[c.dtype]
        out.status = "FAILED"
        out.reason = f"parity check failed: max relative error {p.parity_max_error:.3g} > {tol:g} ({c.dtype})"
        return out
    if cell.kind == "throughput":
        reference = None
        if options.paired_reference and c.impl != impls.REFERENCE:
            reference = runner.prepare(timing.reference_config(p), data)
        rates, ref_rates = timing.measure_throughput(p, options.repeats, options.repeat_seconds, reference)
        series = {"samples_per_second": rates}          # one value per repeat, at steps 1..n, in one call
        if ref_rates:
            series.update(reference_samples_per_second=ref_rates, speed_ratio=list(np.divide(rates, ref_rates)))
        recorder.log(series=series)
        if ref_rates:
            out.summary["speed_ratio_median"] = float(np.median(np.divide(rates, ref_rates)))
    else:
        def on_epoch(result, record):
            recorder.log({**asdict(record), "train_seconds": sum(e.epoch_seconds for e in result.epochs)},
                         step=record.epoch)
        result = runner.train(p, data, on_epoch=on_epoch)   # Diverged propagates: the cell fails
        rates = [e.samples_per_second for e in result.epochs]
        out.proba = result.final_proba[list(EXAMPLE_INDICES)]
        out.summary.update(test_accuracy=result.final_accuracy,
                           time_to_target_seconds=result.time_to_target_seconds)
        if result.time_to_target_seconds is None:
            recorder.log(tags={"bpb.time_to_target": f"not reached ({c.target_accuracy:g})"})
    q1, med, q3 = quartiles(rates)
    out.summary.update(samples_per_second_median=med, samples_per_second_q1=q1, samples_per_second_q3=q3,
                       roofline_fraction=med * flops / (peak_gflops * 1e9), repeats=len(rates))
    # test_accuracy is already logged per epoch; logging it again would add a step-0 point
    recorder.log({k: v for k, v in out.summary.items()
                  if k not in ("compile_seconds", "parity_max_error", "test_accuracy")})
    return out


def run_group(cells: list[Cell], data, recorder, peak_gflops: float, options: BenchOptions) -> None:
    """Run ``cells`` one after the other in this process. A cell that raises is closed FAILED
    with ``Type: message`` as its reason and the traceback as details; the next one starts.
    KeyboardInterrupt propagates (the caller closes the open cell KILLED)."""
    inventory = machine.inventory()
    for cell in cells:
        recorder.open(cell, asdict(cell.config) | {"cell_kind": cell.kind}, cell_tags(cell, inventory))
        details = None
        try:
            outcome = run_cell(cell, data, recorder, peak_gflops, options)
        except Exception as exc:
            outcome = CellOutcome(cell, "FAILED", f"{type(exc).__name__}: {exc}")
            details = traceback.format_exc()
        recorder.close(outcome, details)
