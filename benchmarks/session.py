"""A bench session from plan to report: plan the cells, open the tracked session, run each
implementation's cells (in a worker process of its own, by default), then the examples, the
pytest-benchmark suite and the report.

Statuses are MLflow's: a session ends FINISHED (even with failed cells: they are recorded),
KILLED on Ctrl-C (finished cells kept, the cell in flight KILLED); cells that never ran are
listed as SKIPPED with their reason.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

import impls
import tracking
from benchmarks import gpu, peaks as peak_probes, workers
from benchmarks.inventory import inventory as machine_inventory
from benchmarks.threads import default_threads, pin_threads, set_worker_env
from benchmarks.cells import EXAMPLE_INDICES, CellOutcome, load_average, one_thread, run_group
from benchmarks.config import UsageError
from benchmarks.estimate import estimate
from benchmarks.plan import BenchOptions, Cell, plan
from benchmarks.pytest_suite import attach_pytest_benchmark
from benchmarks.recorder import TrackingRecorder
from tracking.durations import earlier_durations

ROOT = Path(__file__).resolve().parents[1]
# MLflow's monitor reads the run back at every sample (a round trip) and writes each sample from
# a thread of its own, beside the cells' timed work: every 5 s keeps that to one request pair
# per 5 s (docs/performance.md, "The team server")
SYSTEM_METRICS_SECONDS = 5.0


def run_session(options: BenchOptions, data, uri: str, threads: int | None, out_dir: str, mode: str = "full",
                pytest_benchmark: bool = False, isolate: bool = True, data_dir: str | None = None,
                log=print, machine_label: str | None = None) -> tuple[int, str]:
    """Run every cell of ``plan(options)`` inside one tracked session; returns (exit status,
    session run id). Exit status 1 when a cell failed. ``machine_label`` (default: the host
    name) is the tag ``bpb.machine`` of the session and its cells. ``threads`` None: the
    count ``threads.default_threads()`` chooses, recorded with its reason."""
    began, spent_before = time.perf_counter(), tracking.spent()[0]
    label = {"bpb.machine": machine_label or socket.gethostname()}
    cells, skipped = plan(options)
    if not cells:
        raise UsageError("nothing to run here: " + ("; ".join(skipped) or "the matrix is empty") +
                         ". Choose other implementations with --impl.")
    thread_env = set_worker_env()       # before any worker starts: they inherit it
    threads, threads_reason = default_threads() if threads is None else (threads, "--threads given")
    settings = pin_threads(threads)
    inventory = machine_inventory()
    log(estimate(cells, options, earlier_durations(uri, mode), len(data.y_train)))
    log(f"threads {threads}: {threads_reason}; worker environment "
        f"{' '.join(f'{k}={v}' for k, v in thread_env.items()) or 'unset'}")
    dry = mode == "dry-run"
    probes = peak_probes.session_probes({c.config.dtype for c in cells if one_thread(c.config.impl)}, threads, dry, log)
    peaks = peak_probes.record(probes, gpu.session_peaks(any(impls.get(c.config.impl).device == "cuda" for c in cells), log))
    gpu_peaks = peaks.gpu
    session = tracking.Session.start(uri, name=f"bench {mode} · {time.strftime('%Y-%m-%d %H:%M')} · {socket.gethostname()}",
                                     params={**{f"option.{k}": v for k, v in asdict(options).items()},
                                             "mode": mode, "threads": threads, "threads_reason": threads_reason[:500],
                                             "isolate": isolate,
                                             **peaks.params()},
                                     tags={**{f"machine.{k}": v for k, v in inventory.items()},
                                           "git_commit": inventory["git_commit"], "bpb.threads_reason": threads_reason,
                                           "mlflow.note.content": f"bench {mode} session: running ({len(cells)} cells)",
                                           "dataset": data.name, "dataset_digest": data.digest, **label})
    session.log(metrics={"cells_planned": len(cells), **peak_probes.probe_metrics(probes, "start"),
                         "load_average_start": load_average()},
                tags={"bpb.skipped": "; ".join(skipped) or "none"})
    session.log_dict({"skipped": skipped}, "skipped.json")
    monitoring = session.monitor_system(SYSTEM_METRICS_SECONDS)
    log(f"session {session.run_id} in {tracking.display_uri(uri)}: {len(cells)} cells, peak GEMM "
        f"{peaks.get('float32').gflops:.0f} GFLOP/s float32 (spread {peaks.get('float32').spread:.0%}), "
        f"{peaks.get('float64').gflops:.0f} float64, threads {threads} ({settings}), "
        f"{'one process per implementation' if isolate else 'one process'}, cell budget "
        f"{f'{options.cell_budget:g} s' if options.cell_budget else 'none'}; system metrics: {monitoring}")
    if gpu_peaks:
        log("GPU peak GEMM (TFLOP/s): " + ", ".join(f"{m} {v / 1e3:.1f}" for m, v in gpu_peaks.items()))
    for line in skipped:
        log(f"  SKIPPED {line}")
    outcomes: list[CellOutcome] = []

    def on_outcome(outcome):
        outcomes.append(outcome)
        log(describe(outcome))

    train_x = data.features("train", "float32", options.train_limit)
    dataset = tracking.session.dataset_record(train_x, data.labels("train", options.train_limit), name=data.name,
                                              digest=data.digest, source=data.source)
    session.log_dataset(dataset)
    recorder = TrackingRecorder(session, dataset, on_outcome, cells, log=log, tags=label)
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.config.impl, []).append(cell)
    beside_workers = 0.0
    job = workers.Job(data.name, data_dir, threads, peaks, options, parent_pid=os.getpid(), gpu_peaks=gpu_peaks)
    try:
        for impl_cells in groups.values():
            if not isolate:
                workers.prepare_process({c.config.impl for c in impl_cells}, threads)
                run_group(impl_cells, data, recorder, peaks, options, gpu_peaks)
                continue
            before = tracking.spent()[0]
            try:
                workers.run_isolated(impl_cells, job, recorder)
            except workers.WorkerFailed as exc:
                session.log_text(exc.details, f"worker-errors/{len(outcomes)}.txt")
                recorder.abort("FAILED", f"worker: {exc}")
                done = {o.cell for o in outcomes}
                for cell in impl_cells:
                    if cell not in done:
                        on_outcome(CellOutcome(cell, "FAILED", f"worker: {exc} (never started)"))
            finally:       # the writes a worker's messages caused, made while it went on
                beside_workers += tracking.spent()[0] - before
        failed = [o for o in outcomes if o.status != "FINISHED"]
        end = peak_probes.end_probe(threads, dry)
        log(f"peak probe at the end: float32 {end.peak:.0f} GFLOP/s (spread {end.spread:.0%}), "
            f"{end.peak / peaks.get('float32').gflops - 1:+.0%} against the start")
        session.log(metrics={"cells_failed": len(failed), "cells_finished": len(outcomes) - len(failed),
                             **peak_probes.probe_metrics({("float32", False): end}, "end"), "load_average_end": load_average()})
        session.log_dict(examples_payload(data, outcomes), "examples.json")
        if pytest_benchmark:
            attach_pytest_benchmark(session, out_dir, threads, quick=mode != "full", log=log)
        paths = render_report(uri, session.run_id, out_dir, log=log, describe_runs={
            name: run for name, run in recorder.run_ids.items() if name not in recorder.speedup_logged},
            written=session.written)
        view = session.publish_view()
        spent = tracking.spent()[0] - spent_before
        log_overhead(session, recorder, spent, spent - beside_workers + recorder.worker_wait,
                     time.perf_counter() - began, log)
        session.finish("FINISHED")
        if mode in tracking.BENCH_MODES:           # only now is it a FINISHED bench session
            point_latest(paths["html"].parent)
        ui = (f"{uri.rstrip('/')}/{view}" if uri.startswith("http")      # a server is its own UI
              else f"`tox -e ui`, then http://127.0.0.1:5000/{view}")
        log(f"report: {paths['html']}\nMLflow UI: {ui}")
        if failed:
            shown = "; ".join(f"{o.cell.name}: {o.reason}" for o in failed[:5])
            log(f"{len(failed)} of {len(outcomes)} cells failed: {shown}" + (" ..." if len(failed) > 5 else ""))
            return 1, session.run_id
        return 0, session.run_id
    except BaseException as exc:
        # KeyboardInterrupt (Ctrl-C, or SIGTERM: benchmarks/cli.py) ends it KILLED; anything else
        # (a full disk, a broken store) FAILED, with the real cause as the one reason
        killed = isinstance(exc, KeyboardInterrupt)
        reason = ((str(exc) or "interrupted by the user (Ctrl-C)") if killed
                  else tracking.store_failure(exc) or f"{type(exc).__name__}: {exc}")
        status = "KILLED" if killed else "FAILED"
        try:
            recorder.abort(status, reason)
            session.finish(status, f"{reason} (after {len(outcomes)} of {len(cells)} cells)")
        except Exception as second:   # the store itself may be what failed: keep the first cause
            log(f"could not mark session {session.run_id} {status} in the store: {type(second).__name__}")
        raise


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


def render_report(uri: str, run_id: str | None, out_dir: str, log=print, describe_runs: dict | None = None,
                  written: dict | None = None) -> dict:
    """Read a session back from MLflow, write its report files into ``out_dir/<session id>/``
    (a session that did not finish too: its report says so at the top), point ``out_dir/latest``
    at them when it is a FINISHED bench session, and attach them to the session's run. With
    ``describe_runs`` (cell name -> run id, at the end of a session: the cells timed before
    their reference), each of those runs gets its ``speedup_vs_reference`` metric, and the
    session's run its description: the headline. ``written``: the JSON artifacts the session
    itself wrote (``tracking.Session.written``), read from memory instead of the store; runs
    and metrics are always read back from the store."""
    from reports.answer import headline
    from reports.render import write_report
    from reports.tables import with_speedup
    tracking.connect(uri, create=False)
    if written is None:             # a session reaped the store when it started
        tracking.reap_stale(uri)
    parent, raw_cells, raw_epochs = tracking.read_session(uri, run_id, for_report=True)
    meta = tracking.session_meta(parent)
    if meta["status"] not in ("FINISHED", "RUNNING"):
        log(f"session {meta['run_id']} is {meta['status']} ({meta['reason']}): "
            "the report shows the cells it finished")
    cells, epochs = tracking.tidy(raw_cells, raw_epochs)
    folder = Path(out_dir) / meta["run_id"]

    def artifact(path: str) -> dict:
        if written is None:
            return tracking.read_json_artifact(uri, meta["run_id"], path)
        known = written.get(path, {})     # what the session did not write does not exist
        return json.loads(known.read_text()) if isinstance(known, Path) else known
    extras = {"examples": artifact("examples.json"), "skipped": artifact("skipped.json").get("skipped"),
              "pytest_benchmark": artifact("pytest-benchmark/pytest-benchmark.json")}
    paths = write_report(cells, epochs, extras["examples"], meta, folder, skipped=extras["skipped"],
                         pytest_benchmark=extras["pytest_benchmark"], speedup_base=impls.SPEEDUP_BASE,
                         peers=[n for n in impls.names() if impls.is_peer(n)])
    if meta["status"] == "FINISHED" and meta["mode"] in tracking.BENCH_MODES:
        point_latest(folder)
    elif meta["status"] != "RUNNING":      # a running session's is linked when it finishes
        log(f"not linked as {Path(out_dir) / 'latest'}: only a FINISHED bench session is, and this is a "
            f"{meta['status']} {meta['mode']} session")
    tracking.annotate(uri, meta["run_id"], files=paths.values(), artifact_path="report")
    if describe_runs is not None:
        speedups = with_speedup(cells, impls.SPEEDUP_BASE).set_index("cell")["speedup"].dropna()
        for cell, run in describe_runs.items():
            if cell in speedups.index:
                tracking.annotate(uri, run, metrics={"speedup_vs_reference": speedups[cell]})
        lines = headline(cells, impls.SPEEDUP_BASE)
        tracking.annotate(uri, meta["run_id"], tags={"mlflow.note.content": "\n".join(
            [f"**{meta['mode']} session on {meta['machine'].get('cpu_model', '?')}**, dataset {meta['dataset']}", "",
             *[f"- {line}" for line in lines], "",
             f"Report: artifact `report/report.html` of this run (Artifacts tab); on disk {paths['html']}"])})
    log(f"report for session {meta['run_id']}: {', '.join(str(p) for p in paths.values())}")
    return paths


def point_latest(folder: Path) -> None:
    """``latest`` beside ``folder`` becomes a link to it, replaced atomically."""
    link, tmp = folder.parent / "latest", folder.parent / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder.name, target_is_directory=True)
    os.replace(tmp, link)


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
    text = (f"  {o.cell.title}: {s['samples_per_second_median']:,.0f} samples/s "
            f"(IQR {s['samples_per_second_q1']:,.0f}-{s['samples_per_second_q3']:,.0f}), "
            f"{100 * s['roofline_fraction']:.2f}% of peak, compile {s['compile_seconds']:.2f} s")
    if "test_accuracy" in s:
        text += f", test accuracy {s['test_accuracy']:.4f}"
    return text
