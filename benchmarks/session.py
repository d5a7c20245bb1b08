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
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

import tracking
from benchmarks import machine, timing, workers
from benchmarks.cells import EXAMPLE_INDICES, CellOutcome, run_group
from benchmarks.config import UsageError
from benchmarks.plan import BenchOptions, Cell, plan

ROOT = Path(__file__).resolve().parents[1]


class TrackingRecorder:
    """The main process's recorder (see ``benchmarks/cells.py``): writes to the session's
    MLflow runs, remembers the cell in flight, and hands each outcome to ``on_outcome``.

    A cell's params, metrics and tags are gathered and written in one ``log_batch`` when it
    closes, or sooner once ``FLUSH_SECONDS`` have passed (a long cell still shows its epochs
    in the UI as it goes): four calls per cell (create, dataset, batch, end), each a round trip
    to a server (docs/performance.md)."""

    FLUSH_SECONDS = 10.0

    def __init__(self, session: tracking.Session, dataset, on_outcome, tags=None):
        self.session, self.dataset, self.on_outcome = session, dataset, on_outcome
        self.tags = tags or {}                 # added to every cell's (the machine label)
        self.current: tuple[Cell, str] | None = None
        self.tracking_seconds: dict[str, float] = {}   # cell name -> seconds in tracking calls
        self._spent_at_open, self._flushed, self._pending = 0.0, 0.0, None

    def open(self, cell, params, tags):
        self._spent_at_open = tracking.spent()[0]
        self.current = (cell, self.session.open_cell(cell.name, {}, {**tags, **self.tags}, self.dataset))
        self._pending, self._flushed = {"params": dict(params), "tags": {}, "points": []}, time.monotonic()

    def log(self, metrics=None, tags=None, step=0, series=None):
        now, pending = int(time.time() * 1000), self._pending
        pending["points"] += [(k, v, step, now) for k, v in (metrics or {}).items() if v is not None]
        pending["points"] += [(k, v, i, now) for k, vs in (series or {}).items() for i, v in enumerate(vs, start=1)]
        pending["tags"].update(tags or {})
        if time.monotonic() - self._flushed >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self):
        pending, self._pending, self._flushed = self._pending, {"params": {}, "tags": {}, "points": []}, time.monotonic()
        if self.current is not None and pending:
            self.session.log(self.current[1], **pending)

    def close(self, outcome: CellOutcome, details=None):
        self.flush()
        _, run_id = self.current
        self.current = None
        self.session.end_cell(run_id, outcome.status, outcome.reason, details)
        # the main process only writes between open and close (a worker, or the cell in this
        # process, does the rest outside tracking calls): the difference is this cell's cost
        self.tracking_seconds[outcome.cell.name] = tracking.spent()[0] - self._spent_at_open
        self.on_outcome(outcome)

    def abort(self, status: str, reason: str):
        """Close the cell in flight, if any, with ``status`` (KILLED, or FAILED for a dead worker)."""
        if self.current is not None:
            self.close(CellOutcome(self.current[0], status, reason))


def run_session(options: BenchOptions, data, uri: str, threads: int, out_dir: str, mode: str = "full",
                pytest_benchmark: bool = False, isolate: bool = True, data_dir: str | None = None,
                log=print, machine_label: str | None = None) -> tuple[int, str]:
    """Run every cell of ``plan(options)`` inside one tracked session; returns (exit status,
    session run id). Exit status 1 when a cell failed. ``machine_label`` (default: the host
    name) is the tag ``bpb.machine`` of the session and its cells."""
    began, spent_before = time.perf_counter(), tracking.spent()[0]
    label = {"bpb.machine": machine_label or socket.gethostname()}
    cells, skipped = plan(options)
    if not cells:
        raise UsageError("nothing to run here: " + ("; ".join(skipped) or "the matrix is empty") +
                         ". Choose other implementations with --impl.")
    settings = machine.pin_threads(threads)
    inventory = machine.inventory()
    peak = timing.peak_gemm_gflops()
    session = tracking.Session.start(uri, name=f"bench-{mode}-{time.strftime('%Y%m%d-%H%M%S')}",
                                     params={**{f"option.{k}": v for k, v in asdict(options).items()},
                                             "mode": mode, "threads": threads, "isolate": isolate},
                                     tags={**{f"machine.{k}": v for k, v in inventory.items()},
                                           "git_commit": inventory["git_commit"],
                                           "dataset": data.name, "dataset_digest": data.digest, **label})
    session.log(metrics={"peak_gemm_gflops": peak, "cells_planned": len(cells)},
                tags={"bpb.skipped": "; ".join(skipped) or "none"})
    log(f"session {session.run_id} in {tracking.display_uri(uri)}: {len(cells)} cells, peak float32 GEMM "
        f"{peak:.0f} GFLOP/s, threads {threads} ({settings}), "
        f"{'one process per implementation' if isolate else 'one process'}")
    for line in skipped:
        log(f"  SKIPPED {line}")
    outcomes: list[CellOutcome] = []
    bar = progress(total=len(cells))

    def on_outcome(outcome):
        outcomes.append(outcome)
        bar.update(1)
        log(describe(outcome))

    train_x = data.features("train", "float32", options.train_limit)
    dataset = tracking.session.dataset_record(train_x, data.labels("train", options.train_limit), name=data.name,
                                              digest=data.digest, source=data.source)
    recorder = TrackingRecorder(session, dataset, on_outcome, tags=label)
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.config.impl, []).append(cell)
    job = workers.Job(data.name, data_dir, threads, peak, options, parent_pid=os.getpid())
    try:
        for impl_cells in groups.values():
            if not isolate:
                workers.prepare_process({c.config.impl for c in impl_cells}, threads)
                run_group(impl_cells, data, recorder, peak, options)
                continue
            try:
                workers.run_isolated(impl_cells, job, recorder)
            except workers.WorkerFailed as exc:
                session.log_text(exc.details, f"worker-errors/{len(outcomes)}.txt")
                recorder.abort("FAILED", f"worker: {exc}")
                done = {o.cell for o in outcomes}
                for cell in impl_cells:
                    if cell not in done:
                        on_outcome(CellOutcome(cell, "FAILED", f"worker: {exc} (never started)"))
        bar.close()
        failed = [o for o in outcomes if o.status != "FINISHED"]
        session.log(metrics={"cells_failed": len(failed), "cells_finished": len(outcomes) - len(failed)})
        session.log_dict(examples_payload(data, outcomes), "examples.json")
        if pytest_benchmark:
            attach_pytest_benchmark(session, out_dir, quick=mode != "full", log=log)
        paths = render_report(uri, session.run_id, out_dir, log=log)
        log_overhead(session, recorder.tracking_seconds, tracking.spent()[0] - spent_before,
                     time.perf_counter() - began, log)
        session.finish("FINISHED")
        ui = uri if uri.startswith("http") else "tox -e ui"        # a server is its own UI
        log(f"report: {paths['markdown']}  (MLflow UI: {ui}, run {session.run_id})")
        if failed:
            shown = "; ".join(f"{o.cell.name}: {o.reason}" for o in failed[:5])
            log(f"{len(failed)} of {len(outcomes)} cells failed: {shown}" + (" ..." if len(failed) > 5 else ""))
            return 1, session.run_id
        return 0, session.run_id
    except BaseException as exc:
        # KeyboardInterrupt (Ctrl-C, or SIGTERM: benchmarks/cli.py) ends it KILLED; anything else
        # (a full disk, a broken store) FAILED, with the real cause as the one reason
        bar.close()
        killed = isinstance(exc, KeyboardInterrupt)
        reason = (str(exc) or "interrupted by the user (Ctrl-C)") if killed else f"{type(exc).__name__}: {exc}"
        status = "KILLED" if killed else "FAILED"
        try:
            recorder.abort(status, reason)
            session.finish(status, f"{reason} (after {len(outcomes)} of {len(cells)} cells)")
        except Exception as second:   # the store itself may be what failed: keep the first cause
            log(f"could not mark session {session.run_id} {status} in the store: {type(second).__name__}")
        raise


def log_overhead(session: tracking.Session, per_cell: dict[str, float], seconds: float, wall: float, log=print):
    """What tracking cost this session: seconds inside tracking calls per cell (median, max)
    and in all (the report's reads and uploads included), against the session's wall time."""
    cell_times = sorted(per_cell.values()) or [float("nan")]
    summary = {"tracking_seconds": seconds, "session_seconds": wall, "tracking_fraction": seconds / wall,
               "tracking_cell_seconds_median": float(np.median(cell_times)),
               "tracking_cell_seconds_max": cell_times[-1]}
    session.log(metrics=summary)
    session.log_dict({"summary": summary, "per_cell_seconds": per_cell, "by_function": tracking.clock.breakdown()},
                     "tracking-overhead.json")
    log(f"tracking: {seconds:.2f} s of the session's {wall:.1f} s ({100 * seconds / wall:.2f}%); per cell median "
        f"{1000 * summary['tracking_cell_seconds_median']:.0f} ms, max {1000 * cell_times[-1]:.0f} ms")


def render_report(uri: str, run_id: str | None, out_dir: str, log=print) -> dict:
    """Read a session back from MLflow, write its report files into ``out_dir/<session id>/``,
    point ``out_dir/latest`` at them, and attach them to the session's run."""
    from reports.render import write_report
    tracking.connect(uri, create=False)
    tracking.reap_stale(uri)
    parent, raw_cells, raw_epochs = tracking.read_session(uri, run_id)
    meta = tracking.session_meta(parent)
    if meta["status"] not in ("FINISHED", "RUNNING"):
        log(f"session {meta['run_id']} is {meta['status']} ({meta['reason']}): "
            "the report shows the cells it finished")
    cells, epochs = tracking.tidy(raw_cells, raw_epochs)
    folder = Path(out_dir) / meta["run_id"]
    paths = write_report(cells, epochs, tracking.read_examples(uri, meta["run_id"]), meta, folder)
    point_latest(folder)
    tracking.annotate(uri, meta["run_id"], files=paths.values(), artifact_path="report")
    log(f"report for session {meta['run_id']}: {', '.join(str(p) for p in paths.values())}")
    return paths


def point_latest(folder: Path) -> None:
    """``latest`` beside ``folder`` becomes a link to it, replaced atomically."""
    link, tmp = folder.parent / "latest", folder.parent / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder.name, target_is_directory=True)
    os.replace(tmp, link)


def progress(total: int):
    """A tqdm bar on a terminal; silent in CI and when output is piped."""
    from tqdm import tqdm
    quiet = bool(os.environ.get("CI")) or not sys.stderr.isatty()
    return tqdm(total=total, desc="bench", disable=quiet, unit="cell", leave=False)


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
        return f"  {o.cell.name}: {o.status} ({o.reason})"
    s = o.summary
    text = (f"  {o.cell.name}: {s['samples_per_second_median']:,.0f} samples/s "
            f"(IQR {s['samples_per_second_q1']:,.0f}-{s['samples_per_second_q3']:,.0f}), "
            f"{100 * s['roofline_fraction']:.2f}% of peak, compile {s['compile_seconds']:.2f} s")
    if "test_accuracy" in s:
        text += f", test accuracy {s['test_accuracy']:.4f}"
    return text


def attach_pytest_benchmark(session: tracking.Session, out_dir: str, quick: bool, log=print) -> None:
    """Run the pytest-benchmark suite in a subprocess; log its JSON to the session. The JSON is
    this session's own (``out_dir/<session id>/``), and only a suite that passed is attached."""
    folder = Path(out_dir) / session.run_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pytest-benchmark.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks" / "suite_train_step.py"),
           "-q", "-p", "no:cacheprovider", "--benchmark-enable", f"--benchmark-json={path}",
           "--benchmark-max-time=0.2", "--benchmark-min-rounds=5"]
    if quick:
        cmd += ["-k", "float32 and (b1 or b256)"]
    log("pytest-benchmark suite: " + " ".join(cmd[2:]))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    log("  " + (tail[0] if tail else f"exit {proc.returncode}"))
    if proc.returncode == 0 and path.exists():
        session.log_artifact(path, "pytest-benchmark")
        n = len(json.loads(path.read_text()).get("benchmarks", []))
        session.log(metrics={"pytest_benchmark_cases": n})
    else:
        session.log(tags={"bpb.pytest_benchmark": f"failed: exit {proc.returncode}"})
