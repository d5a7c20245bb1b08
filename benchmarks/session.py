"""A bench session from plan to report: plan the cells, open the tracked session, run each
implementation's cells (in a worker process of its own, by default), then the examples, the
pytest-benchmark suite and the report.

Statuses are MLflow's: a session ends FINISHED (even with failed cells: they are recorded),
KILLED on Ctrl-C (finished cells kept, the cell in flight KILLED); cells that never ran are
listed as SKIPPED with their reason.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import impls
import tracking
from benchmarks import peaks as peak_probes, workers
from benchmarks.hosts import LOCAL
from benchmarks.cells import EXAMPLE_INDICES, CellOutcome, load_average, one_thread, shape_of
from benchmarks.scaling import group_runner
from benchmarks.config import UsageError
from benchmarks.estimate import estimate
from benchmarks.plan import BenchOptions, Cell, plan
from benchmarks.pytest_suite import attach_pytest_benchmark
from benchmarks.recorder import TrackingRecorder
from benchmarks.session_report import point_latest, render_report
from tracking.durations import earlier_durations
from tracking.peaks import Peaks, shape_metric

ROOT = Path(__file__).resolve().parents[1]
# MLflow's monitor reads the run back at every sample (a round trip) and writes each sample from
# a thread of its own, beside the cells' timed work: every 5 s keeps that to one request pair
# per 5 s (docs/performance.md, "The team server")
SYSTEM_METRICS_SECONDS = 5.0


@dataclass(frozen=True)
class SessionSettings:
    """How a session runs, beside its matrix (``BenchOptions``), its data and its store."""
    out_dir: str                          # the report's folder
    mode: str = "full"                    # full, quick, dry-run; regress, gpu-check
    threads: int | None = None            # None: ``threads.default_threads()`` chooses, its reason recorded
    threads_reason: str = "--threads given"   # why ``threads``, where it is given
    pytest_benchmark: bool = False
    isolate: bool = True                  # one worker process per implementation
    data_dir: str | None = None
    machine_label: str | None = None      # the tag ``bpb.machine`` of the session and its cells (default: host)
    host: object = LOCAL                  # where the cells run and the machine is measured (benchmarks/hosts.py)

    def label(self) -> dict:
        return {"bpb.machine": self.machine_label or socket.gethostname(), **self.host.tags}


@dataclass
class Machine:
    """What a session finds before its first cell: the cells, the threads and why, the inventory, the peaks."""
    cells: list[Cell]
    skipped: list[str]
    threads: int
    threads_reason: str
    pinned: object                        # ``pin_threads``' answer
    inventory: dict
    probes: dict
    peaks: Peaks
    shapes: dict                          # shape key -> ShapePeak (benchmarks/shape_peaks.py)


@dataclass
class Running:
    """A session under way: what its steps share."""
    options: BenchOptions
    data: object
    store: tracking.Store
    settings: SessionSettings
    machine: Machine
    session: tracking.Session
    log: object = print
    began: float = 0.0                    # time.perf_counter() at its start
    spent_before: float = 0.0             # tracking.spent() at its start
    spent_elsewhere: float = 0.0          # tracking calls made for it in other threads (a shard's hosts)
    outcomes: list[CellOutcome] = field(default_factory=list)
    recorder: TrackingRecorder | None = None

    def on_outcome(self, outcome: CellOutcome) -> None:
        self.outcomes.append(outcome)
        self.log(describe(outcome))


def run_session(options: BenchOptions, data, store: tracking.Store, settings: SessionSettings,
                log=print) -> tuple[int, str]:
    """Run every cell of ``plan(options)`` inside one tracked session; returns (exit status,
    session run id). Exit status 1 when a cell failed."""
    began, spent_before = time.perf_counter(), tracking.spent()[0]
    machine = survey(options, data, store, settings, log)
    session = open_session(options, data, store, settings, machine, log)
    run = Running(options, data, store, settings, machine, session, log, began, spent_before)
    train_x = data.features("train", "float32", options.train_limit)
    dataset = tracking.session.dataset_record(train_x, data.labels("train", options.train_limit), name=data.name,
                                              digest=data.digest, source=data.source)
    run.session.log_dataset(dataset)
    run.recorder = TrackingRecorder(run.session, dataset, run.on_outcome, machine.cells, log=log,
                                    tags=settings.label())
    try:
        beside_workers = run_cells(run)
        return finish(run, beside_workers), session.run_id
    except BaseException as exc:
        abort(run, exc)
        raise


def survey(options: BenchOptions, data, store: tracking.Store, settings: SessionSettings, log=print) -> Machine:
    """The cells planned, the threads chosen and pinned, the inventory, the estimate printed, the peaks probed."""
    cells, skipped = plan(options)
    if not cells:
        raise UsageError("nothing to run here: " + ("; ".join(skipped) or "the matrix is empty") +
                         ". Choose other implementations with --impl.")
    log(estimate(cells, options, earlier_durations(store, settings.mode), len(data.y_train)))
    here = settings.host.measure(settings.threads, settings.threads_reason,
                                 {c.config.dtype for c in cells if one_thread(c.config.impl)},
                                 settings.mode == "dry-run", any(impls.get(c.config.impl).device == "cuda" for c in cells),
                                 {s for s in map(shape_of, cells) if s}, log=log)
    return Machine(cells, skipped, here.threads, here.reason, here.pinned, here.inventory, here.probes, here.peaks,
                   here.shapes)


def open_session(options: BenchOptions, data, store: tracking.Store, settings: SessionSettings, m: Machine,
                 log=print) -> tracking.Session:
    """The session's run: its options, inventory, peaks and skipped cells recorded, system metrics started."""
    mode, inventory = settings.mode, m.inventory
    session = tracking.Session.start(store, name=f"bench {mode} · {time.strftime('%Y-%m-%d %H:%M')} · "
                                                f"{settings.host.name or socket.gethostname()}",
                                     params={**{f"option.{k}": v for k, v in asdict(options).items()},
                                             "mode": mode, "threads": m.threads, "threads_reason": m.threads_reason[:500],
                                             "isolate": settings.isolate,
                                             **m.peaks.params()},
                                     tags={**{f"machine.{k}": v for k, v in inventory.items()},
                                           "git_commit": inventory["git_commit"], "bpb.threads_reason": m.threads_reason,
                                           "mlflow.note.content": f"bench {mode} session: running ({len(m.cells)} cells)",
                                           "dataset": data.name, "dataset_digest": data.digest, **settings.label()})
    session.log(metrics={"cells_planned": len(m.cells), **peak_probes.probe_metrics(m.probes, "start"),
                         **{shape_metric(key, name): v for key, p in m.shapes.items() for name, v in p.figures().items()},
                         "load_average_start": load_average()},
                tags={"bpb.skipped": "; ".join(m.skipped) or "none"})
    session.log_dict({"skipped": m.skipped}, "skipped.json")
    monitoring = session.monitor_system(SYSTEM_METRICS_SECONDS)
    peaks = m.peaks
    log(f"session {session.run_id} in {store.display}: {len(m.cells)} cells, peak GEMM "
        f"{peaks.get('float32').gflops:.0f} GFLOP/s float32 (spread {peaks.get('float32').spread:.0%}), "
        f"{peaks.get('float64').gflops:.0f} float64, threads {m.threads} ({m.pinned}), "
        f"{'one process per implementation' if settings.isolate else 'one process'}, cell budget "
        f"{f'{options.cell_budget:g} s' if options.cell_budget else 'none'}; system metrics: {monitoring}")
    if peaks.gpu:
        log("GPU peak GEMM (TFLOP/s): " + ", ".join(f"{k} {v / 1e3:.1f}" for k, v in peaks.gpu.items()))
    for line in m.skipped:
        log(f"  SKIPPED {line}")
    return session


def run_cells(run: Running) -> float:
    """Each implementation's cells, in a worker process of its own unless ``isolate`` is off;
    returns the seconds of tracking calls made while workers ran."""
    m, settings, peaks, gpu_peaks = run.machine, run.settings, run.machine.peaks, run.machine.peaks.gpu
    groups: dict[str, list[Cell]] = {}
    for cell in m.cells:        # the scaling section's cases are timed together (benchmarks/scaling.py)
        groups.setdefault("scaling" if cell.kind == "scaling" else cell.config.impl, []).append(cell)
    job = workers.Job(run.data.name, settings.data_dir, m.threads, peaks, run.options, parent_pid=os.getpid(),
                      gpu_peaks=gpu_peaks)
    if not settings.isolate:
        for impl_cells in groups.values():
            workers.prepare_process({c.config.impl for c in impl_cells}, m.threads)
            group_runner(impl_cells)(impl_cells, run.data, run.recorder, peaks, run.options, gpu_peaks)
        return 0.0

    def failed(impl_cells: list[Cell], exc: workers.WorkerFailed, recorder) -> None:
        run.session.log_text(exc.details, f"worker-errors/{impl_cells[0].name.replace('/', '_')}.txt")
        recorder.abort("FAILED", f"worker: {exc}")
        done = {o.cell for o in run.outcomes}
        for cell in impl_cells:
            if cell not in done:
                run.on_outcome(CellOutcome(cell, "FAILED", f"worker: {exc} (never started)"))

    before = tracking.spent()[0]       # the writes a worker's messages caused, made while it went on
    elsewhere = settings.host.run_groups(list(groups.values()), job, run.recorder, failed)
    run.spent_elsewhere += elsewhere
    beside_workers = tracking.spent()[0] - before + elsewhere
    return beside_workers


def finish(run: Running, beside_workers: float) -> int:
    """After the last cell: the end probe, the examples, the pytest-benchmark suite, the report,
    the view, the tracking overhead; the session FINISHED. Returns 1 when a cell failed."""
    session, recorder, outcomes, log, m, store = run.session, run.recorder, run.outcomes, run.log, run.machine, run.store
    dry, mode = run.settings.mode == "dry-run", run.settings.mode
    failed = [o for o in outcomes if o.status != "FINISHED"]
    end = run.settings.host.end_probe(m.threads, dry)       # None: the host is gone (a fleet's)
    log(f"peak probe at the end: float32 {end.peak:.0f} GFLOP/s (spread {end.spread:.0%}), "
        f"{end.peak / m.peaks.get('float32').gflops - 1:+.0%} against the start" if end else
        "peak probe at the end: none, the host is gone")
    session.log(metrics={"cells_failed": len(failed), "cells_finished": len(outcomes) - len(failed),
                         **peak_probes.probe_metrics({("float32", False): end} if end else {}, "end"),
                         "load_average_end": load_average()})
    session.log_dict(examples_payload(run.data, outcomes), "examples.json")
    if run.settings.pytest_benchmark:
        attach_pytest_benchmark(session, run.settings.out_dir, m.threads, quick=mode != "full", log=log)
    paths = render_report(store, session.run_id, run.settings.out_dir, log=log, describe_runs={
        name: r for name, r in recorder.run_ids.items() if name not in recorder.speedup_logged},
        written=session.written)
    view = session.publish_view()
    spent = tracking.spent()[0] - run.spent_before + run.spent_elsewhere
    log_overhead(session, recorder, spent, spent - beside_workers + recorder.worker_wait,
                 time.perf_counter() - run.began, log)
    session.finish("FINISHED")
    if mode in tracking.BENCH_MODES:           # only now is it a FINISHED bench session
        point_latest(paths["html"].parent)
    ui = (f"{store.display.rstrip('/')}/{view}" if store.uri.startswith("http")      # a server is its own UI
          else f"`tox -e ui`, then http://127.0.0.1:5000/{view}")
    log(f"report: {paths['html']}\nMLflow UI: {ui}")
    if failed:
        shown = "; ".join(f"{o.cell.name}: {o.reason}" for o in failed[:5])
        log(f"{len(failed)} of {len(outcomes)} cells failed: {shown}" + (" ..." if len(failed) > 5 else ""))
        return 1
    return 0


def abort(run: Running, exc: BaseException) -> None:
    """The session and its cell in flight ended: KILLED on KeyboardInterrupt (Ctrl-C, or SIGTERM:
    benchmarks/cli.py), FAILED on anything else (a full disk, a broken store), the real cause as the reason."""
    killed = isinstance(exc, KeyboardInterrupt)
    reason = ((str(exc) or "interrupted by the user (Ctrl-C)") if killed
              else tracking.store_failure(exc) or f"{type(exc).__name__}: {exc}")
    status = "KILLED" if killed else "FAILED"
    for close in (lambda: run.recorder.abort_all(status, reason),
                  lambda: run.session.finish(status, f"{reason} (after {len(run.outcomes)} of {len(run.machine.cells)} cells)")):
        try:
            close()
        except Exception as second:   # the store itself may be what failed: keep the first cause
            run.log(f"could not mark session {run.session.run_id} {status} in the store: {type(second).__name__}: "
                    f"{str(second).strip()[:300]}")


def log_overhead(session: tracking.Session, recorder: TrackingRecorder, seconds: float, waited: float, wall: float,
                 log=print):
    """What tracking cost this session. ``seconds``: time inside tracking calls, per cell
    (median, max) and in all (the report's reads and uploads included). ``waited``: the part
    of the wall time the session spent waiting for them: the calls made while no worker ran,
    and the time workers waited at their sync points (``benchmarks/workers.py``); the calls a
    worker's messages caused ran while it went on. Both against the session's wall time."""
    cell_times = sorted(recorder.tracking_seconds.values()) or [float("nan")]
    waits = sorted(recorder.wait_seconds.values()) or [float("nan")]
    summary = {"tracking_seconds": seconds, "session_seconds": wall, "tracking_fraction": seconds / wall,
               "tracking_cell_seconds_median": float(np.median(cell_times)),
               "tracking_cell_seconds_max": cell_times[-1],
               "tracking_wait_seconds": waited, "tracking_wait_fraction": waited / wall,
               "tracking_wait_cell_seconds_median": float(np.median(waits)),
               "tracking_wait_cell_seconds_max": waits[-1]}
    session.log(metrics=summary)
    session.log_dict({"summary": summary, "per_cell_seconds": recorder.tracking_seconds,
                      "per_cell_wait_seconds": recorder.wait_seconds, "wait_after_last_cells": recorder.wait_after,
                      "by_function": tracking.clock.breakdown()}, "tracking-overhead.json")
    log(f"tracking: {seconds:.2f} s in calls, {waited:.2f} s of the session's {wall:.1f} s spent waiting for them "
        f"({100 * waited / wall:.2f}%); per cell: calls median {1000 * summary['tracking_cell_seconds_median']:.0f} ms, "
        f"max {1000 * cell_times[-1]:.0f} ms; waits median {1000 * summary['tracking_wait_cell_seconds_median']:.0f} "
        f"ms, max {1000 * waits[-1]:.0f} ms")


def examples_payload(data, outcomes: list[CellOutcome]) -> dict:
    """The homework's picture as data: three test images and each accuracy cell's predictions."""
    idx = list(EXAMPLE_INDICES)
    return {
        "classes": list(data.classes),
        "indices": idx,
        "labels": [int(v) for v in data.y_test[idx]],
        "images": [data.x_test[i].tolist() for i in idx],
        "predictions": {o.cell.name: np.round(o.proba, 6).tolist() for o in outcomes
                        if o.proba is not None and o.status == "FINISHED"},
        "accuracy": {o.cell.name: o.summary.get("test_accuracy") for o in outcomes if o.proba is not None},
    }


def describe(o: CellOutcome) -> str:
    if o.status != "FINISHED":
        return f"  {o.cell.title}: {o.status} ({o.reason})"
    s = o.summary
    if o.cell.kind == "scaling":          # benchmarks/scaling.py: its ratios, no roofline
        ratio = (f", DDP overhead {s['ddp_overhead']:.2f}x" if "ddp_overhead" in s else
                 f", efficiency {s['scaling_efficiency']:.2f}" if "scaling_efficiency" in s else "")
        return (f"  {o.cell.title}: {s['samples_per_second_median']:,.0f} samples/s (IQR "
                f"{s['samples_per_second_q1']:,.0f}-{s['samples_per_second_q3']:,.0f}){ratio}")
    text = (f"  {o.cell.title}: {s['samples_per_second_median']:,.0f} samples/s "
            f"(IQR {s['samples_per_second_q1']:,.0f}-{s['samples_per_second_q3']:,.0f}), "
            f"{100 * s['roofline_fraction']:.2f}% of peak"
            + (f" ({100 * s['shape_fraction']:.0f}% of its shape peak)" if "shape_fraction" in s else "")
            + f", compile {s['compile_seconds']:.2f} s")
    if "test_accuracy" in s:
        text += f", test accuracy {s['test_accuracy']:.4f}"
    return text
