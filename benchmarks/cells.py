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
    recorder.log(metrics, tags, step, series, params)   # as the cell goes (params: once each)
    recorder.progress(text)                  # a line for the person watching (each epoch, long repeats)
    recorder.sync()                          # wait until all of the above is written (before timed work,
                                             # after the untimed warm-up: the writes overlap it)
    recorder.close(outcome, details)         # FINISHED or FAILED, with the reason

MLflow conventions (docs/architecture.md): constants of a cell are params; a metric with a
``step`` is per epoch (``epoch/*``, step = epoch) or per timed repeat (``repeat/*``, step =
repeat); the rest are the cell's summary (step 0). The prefixes are also the UI's chart
sections, so a cell's page opens on its training curves.
"""
from __future__ import annotations

import math
import os
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

import impls
from benchmarks import budget, gpu, memory, runner, timing
from benchmarks.inventory import inventory as machine_inventory
from benchmarks.plan import BenchOptions, Cell
from tracking.peaks import GPU_KEY, Peaks, shape_key
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
            "configuration": cell.configuration,     # the saved view's groups
            "device": cls.device, "dtype": c.dtype, "preset": c.preset,
            "batch_size": c.batch_size, "git_commit": inventory.get("git_commit", "unknown")}


def one_thread(impl: str) -> bool:
    """Whether ``impl`` runs on one thread whatever the session's thread count: its class says
    so (``single_threaded``), or, unsaid, it only runs batch 1 (the per-sample implementations)."""
    cls = impls.get(impl)
    said = getattr(cls, "single_threaded", None)
    return bool(said) if said is not None else cls.batch_sizes == (1,)


def roofline_peak(cell: Cell, peaks: Peaks, gpu_peaks: dict | None) -> tuple[float, str]:
    """(GFLOP/s, what it is) the cell's roofline divides by: the GPU's own peak in the mode the
    cell runs (``benchmarks/gpu.py``) for a GPU cell, else this machine's CPU GEMM peak in the
    cell's dtype measured this session (``benchmarks/peaks.py`` PEAK_RULE): on 1 thread for a single-threaded
    implementation (``one_thread``), on the session's threads for the others."""
    c = cell.config
    if impls.get(c.impl).device == "cuda":
        return gpu.roofline_peak(c.dtype, c.tf32, gpu_peaks or {})
    peak = peaks.for_cell(c.dtype, one_thread(c.impl))
    threads = "1 thread" if peak.one_thread else "session threads"
    return peak.gflops, f"CPU {c.dtype} GEMM ({threads}), measured this session, probe spread {100 * peak.spread:.1f}%"


def shape_of(cell: Cell) -> tuple | None:
    """(layer sizes, batch, dtype) of a batch cell on the CPU, whose ``shape_fraction`` divides by
    the shape peak (``benchmarks/shape_peaks.py``); None for a per-sample, GPU or scaling cell."""
    c = cell.config
    if cell.kind == "scaling" or c.batch_size == 1 or impls.get(c.impl).device == "cuda":
        return None
    return tuple(c.sizes), c.batch_size, c.dtype


def shape_peak_gflops(cell: Cell, peaks: Peaks) -> float:
    """The shape peak of the cell's network, batch and dtype measured this session; NaN: none."""
    shape = shape_of(cell)
    return peaks.shapes.get(shape_key(*shape), float("nan")) if shape else float("nan")


def cell_params(cell: Cell, peaks: Peaks, options: BenchOptions, gpu_peaks: dict | None = None) -> dict:
    """The child run's params: the whole RunConfig and the cell's constants, the peak its
    roofline divides by among them (``peak_gemm_gflops``, which one: ``peak_gemm``)."""
    c = cell.config
    on_cpu = impls.get(c.impl).device != "cuda"
    peak = peaks.for_cell(c.dtype, one_thread(c.impl))
    constants = {"cell_kind": cell.kind, "flops_per_sample": impls.flops_per_sample(impls.NetSpec(c.sizes, c.activation)),
                 "peak_gemm_gflops": round(roofline_peak(cell, peaks, gpu_peaks)[0], 1),
                 "peak_gemm": peak.key if on_cpu else GPU_KEY,
                 "peak_gemm_spread": round(peak.spread, 4) if on_cpu else float("nan"),
                 "shape_peak_gflops": round(shape_peak_gflops(cell, peaks), 1),
                 "cell_budget_seconds": options.cell_budget}
    if cell.kind == "throughput":       # paired_reference: the speed-up base timed in pairs, the name stores hold
        constants.update(repeats=options.repeats, repeat_seconds=options.repeat_seconds,
                         paired_reference=options.paired_reference)
    return asdict(c) | constants


def rate_summary(rates) -> dict:
    """A cell's samples/s over its repeats (or epochs, or rounds): median, quartiles, relative IQR."""
    q1, med, q3 = quartiles(rates)
    return {"samples_per_second_median": med, "samples_per_second_q1": q1, "samples_per_second_q3": q3,
            "samples_per_second_relative_iqr": (q3 - q1) / med if med > 0 else float("nan")}


def load_average() -> float:
    """The 1-minute load average (all processes of the machine, this one's included)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_cell(cell: Cell, data, recorder, peaks: Peaks, options: BenchOptions,
             gpu_peaks: dict | None = None) -> CellOutcome:
    """Validate, warm up, time; logs to ``recorder`` as it goes. Exceptions propagate.
    ``peaks``: the machine's measured CPU GEMM peaks (``tracking/peaks.py``); a GPU cell's roofline uses
    the GPU's own (``gpu_peaks``)."""
    c = cell.config
    out = CellOutcome(cell)
    rss_words = memory.reset_peak_rss()        # this cell's own peak, in a worker that ran others before
    recorder.log({"load_average_start": load_average()}, tags={"bpb.peak_rss": rss_words})
    p = runner.prepare(c, data)
    flops = impls.flops_per_sample(p.spec)
    on_gpu = p.cls.device == "cuda"
    peak_gflops, peak_words = roofline_peak(cell, peaks, gpu_peaks)
    numbers = {f"impl_{k}": v for k, v in p.details.items() if isinstance(v, float)}
    words = {f"impl.{k}": v for k, v in p.details.items() if not isinstance(v, float)}
    # the words are constants of the cell (which optimizer kernel ran): params, and tags as before
    recorder.log({"compile_seconds": p.compile_seconds, "parity_max_error": p.parity_max_error, **numbers},
                 tags={"bpb.roofline_peak": peak_words, **words}, params=words)
    out.summary.update(compile_seconds=p.compile_seconds, parity_max_error=p.parity_max_error)
    if not p.parity_ok:
        tol = impls.PARITY_TOLERANCE[c.dtype]
        out.status = "FAILED"
        out.reason = f"parity check failed: max relative error {p.parity_max_error:.3g} > {tol:g} ({c.dtype})"
        recorder.log({"peak_rss_mb": memory.peak_rss_mb()})
        return out
    if on_gpu:
        gpu.reset_peak_memory()
    if cell.kind == "throughput":
        base = None             # the speed-up base, timed between the repeats (``paired_reference``)
        if options.paired_reference and c.impl != impls.SPEEDUP_BASE:
            base = runner.prepare(timing.reference_config(p), data)

        repeats, note = budget.fit_repeats(options.repeats, options.repeat_seconds, base is not None,
                                           options.cell_budget)

        def on_repeat(r, seconds, rate):
            if seconds >= 5:                       # short repeats go by in the cell's own line
                recorder.progress(f"repeat {r}/{repeats}: {rate:,.0f} samples/s ({seconds:.0f} s)")
        rates, base_rates = timing.measure_throughput(p, repeats, options.repeat_seconds, base,
                                                      on_repeat=on_repeat, ready=recorder.sync,
                                                      go_on=budget.repeats_deadline(options.cell_budget))
        if len(rates) < repeats:
            note = (f"stopped after {len(rates)} of {options.repeats} repeats: over the {options.cell_budget:g} s "
                    "cell budget")
        if note:
            recorder.log(tags={"bpb.budget": note})
            recorder.progress(note)
            out.summary["budget_note"] = note
        series = {"repeat/samples_per_second": rates}    # one value per repeat, at steps 1..n, in one call
        if base_rates:
            # the speed-up base's samples/s; the metric keeps its old name, which the stores hold
            series.update({"repeat/reference_samples_per_second": base_rates,
                           "repeat/speed_ratio": list(np.divide(rates, base_rates))})
        recorder.log(series=series)
        if base_rates:
            out.summary["speed_ratio_median"] = float(np.median(np.divide(rates, base_rates)))
    else:
        p, fitted = budget.fit(p, options.cell_budget)
        if "note" in fitted:
            recorder.log(tags={"bpb.budget": fitted["note"]})
            recorder.progress(fitted["note"])
            out.summary["budget_note"] = fitted["note"]
        if fitted:
            recorder.log({"projected_train_seconds": fitted["projected_seconds"],
                          "train_samples": fitted["train_samples"]})
        recorder.sync()                            # the writes so far end before the first timed epoch

        def on_epoch(result, record):
            trained = sum(e.epoch_seconds for e in result.epochs)
            recorder.log({f"epoch/{k}": v for k, v in asdict(record).items() if k != "epoch"}
                         | {"epoch/train_seconds": trained}, step=record.epoch)
            recorder.progress(f"epoch {record.epoch}/{c.epochs}: test accuracy {record.test_accuracy:.4f}, "
                              f"loss {record.train_loss:.4f}, {record.samples_per_second:,.0f} samples/s, "
                              f"{record.epoch_seconds:.1f} s")
            recorder.sync()                        # a flush of the epochs so far ends before the next one
        clock = budget.Clock(options.cell_budget)
        result = runner.train(p, data, on_epoch=on_epoch, keep_going=clock)   # Diverged propagates: the cell fails
        if clock.stopped:
            # the tag holds both when both happened (the report reads the samples and the epochs from it)
            out.summary["budget_note"] = "; ".join(filter(None, [out.summary.get("budget_note"), clock.stopped]))
            recorder.log(tags={"bpb.budget": out.summary["budget_note"]})
            recorder.progress(clock.stopped)
        rates = [e.samples_per_second for e in result.epochs]
        out.proba = result.final_proba[list(EXAMPLE_INDICES)]
        out.summary.update(test_accuracy=result.final_accuracy,
                           time_to_target_seconds=result.time_to_target_seconds)
        if result.time_to_target_seconds is None:
            recorder.log(tags={"bpb.time_to_target": f"not reached ({c.target_accuracy:g})"})
    if on_gpu:
        recorder.log({"peak_device_memory_bytes": gpu.peak_memory_bytes()})
        if cell.kind == "throughput":   # after the timed passes, on an instance of its own
            recorder.log(*gpu.measure_energy(timing.Timed(p.new(), p, options.repeat_seconds)))
    out.summary.update(rate_summary(rates))
    out.summary["roofline_fraction"] = out.summary["samples_per_second_median"] * flops / (peak_gflops * 1e9)
    shape_gflops = shape_peak_gflops(cell, peaks)
    if not math.isnan(shape_gflops):        # a batch cell on the CPU (``shape_of``)
        out.summary["shape_fraction"] = out.summary["samples_per_second_median"] * flops / (shape_gflops * 1e9)
    recorder.log({k: v for k, v in out.summary.items() if k not in ("compile_seconds", "parity_max_error", "budget_note")}
                 | {"load_average_end": load_average(), "peak_rss_mb": memory.peak_rss_mb()})
    return out


def run_group(cells: list[Cell], data, recorder, peaks: Peaks, options: BenchOptions,
              gpu_peaks: dict | None = None) -> None:
    """Run ``cells`` one after the other in this process. A cell that raises is closed FAILED
    with ``Type: message`` as its reason and the traceback as details; the next one starts.
    KeyboardInterrupt propagates (the caller closes the open cell KILLED)."""
    inventory = machine_inventory()
    for cell in cells:
        recorder.open(cell, cell_params(cell, peaks, options, gpu_peaks), cell_tags(cell, inventory))
        details = None
        try:
            outcome = run_cell(cell, data, recorder, peaks, options, gpu_peaks)
        except Exception as exc:
            outcome = CellOutcome(cell, "FAILED", f"{type(exc).__name__}: {exc}")
            details = traceback.format_exc()
        recorder.close(outcome, details)
