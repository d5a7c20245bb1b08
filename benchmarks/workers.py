"""Process-per-implementation isolation: each implementation's cells run in a fresh spawned
process, so that no other backend's thread pool is alive beside it (docs/performance.md:
numba's and torch's OpenMP pools slowed each other 1.5-6x when they shared a process).

A worker imports neither mlflow nor pandas: it sends what ``cells.run_group`` records to the
main process over a pipe without waiting, so the main process writes to the store while the
worker prepares its next cell; before any timed work the worker waits until every message is
written (``PipeRecorder.sync``), so no tracking write overlaps a timed region. Messages are
handled in the order sent, so the main process always knows which cell is in flight.
When a worker dies, that cell is closed FAILED by the main process (what it sent before is
still read from the pipe); when the main process dies, the worker's next message fails and it
exits quietly.

Test hook: ``BPB_FAULT=module:function`` in the environment makes each worker call that
function first (``tests/faults.py`` breaks one implementation class for the process).
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import impls
from benchmarks.config import UsageError
from benchmarks.inventory import FAULT_ENV
from benchmarks.leave import leave
from benchmarks.plan import BenchOptions, Cell
from benchmarks.threads import pin_threads
from tracking.peaks import Peaks

HEARTBEAT_SECONDS = 20.0   # the longest the main process stays silent while a worker computes
# A worker that sends nothing for this many cell budgets is ended and its cell FAILED: it
# was stopped (SIGSTOP), hung or deadlocked. A cell sends a message at least every epoch and
# every timed repeat, and a cell never runs past its budget by much (benchmarks/budget.py).
NO_PROGRESS_BUDGETS = 3
NO_BUDGET_SECONDS = 600.0  # the gate's cells have no budget: counted as this
NO_PROGRESS_ENV = "BPB_NO_PROGRESS_SECONDS"


@dataclass(frozen=True)
class Job:
    """What a worker needs besides its cells (all picklable)."""
    dataset: str
    data_dir: str | None
    threads: int
    peaks: Peaks                    # the session's measured CPU GEMM peaks (tracking/peaks.py)
    options: BenchOptions
    parent_pid: int | None = None   # the main process; the worker exits when it is gone
    gpu_peaks: dict | None = None   # the GPU's peak GEMM GFLOP/s per mode (benchmarks/gpu.py), if measured


def prepare_process(names, threads: int) -> None:
    """Import the backends of ``names``, then pin every pool (pinning only touches pools that
    are loaded). The fault hook, if set, runs first."""
    fault = os.environ.get(FAULT_ENV)
    if fault:
        module, func = fault.split(":")
        getattr(importlib.import_module(module), func)()
    for name in names:
        impls.get(name)
    pin_threads(threads)


class PipeRecorder:
    """The worker's side of a recorder: every call becomes a message, sent without waiting,
    so the main process writes to the store while this process goes on (prepares its next
    cell). ``sync()`` waits until the main process has handled everything sent before it:
    a cell calls it before its timed work (``benchmarks/cells.py``), so no write overlaps a
    timed pass. The seconds spent waiting there are what tracking cost this process's cells:
    they travel with each ``close`` (and with ``done`` for the wait after the last cell)."""

    def __init__(self, conn):
        self.conn = conn
        self.waited = 0.0          # seconds in sync() since the last close (or the start)

    def _send(self, *msg):
        self.conn.send(msg)

    def sync(self):
        t0 = time.perf_counter()
        self.conn.send(("sync",))
        self.conn.recv()          # the ack: everything sent before is written
        self.waited += time.perf_counter() - t0

    def open(self, cell, params, tags):
        self._send("open", cell, params, tags)

    def log(self, metrics=None, tags=None, step=0, series=None, params=None):
        self._send("log", metrics, tags, step, series, params)

    def progress(self, text):
        self._send("progress", text)

    def close(self, outcome, details=None):
        self._send("close", outcome, details, self.waited)
        self.waited = 0.0


def _exit_with_parent(parent: int) -> None:
    """A daemon thread: when the main process is gone (kill -9), stop at once instead of
    training on for nobody."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker(conn, job: Job, cells: list[Cell]) -> None:
    sent = False
    try:
        # started with SIGINT ignored (run_isolated), so that Ctrl-C during start-up cannot print
        # a traceback from multiprocessing's bootstrap; from here on it is a KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from benchmarks import datasets
        from benchmarks.scaling import group_runner
        if job.parent_pid:
            threading.Thread(target=_exit_with_parent, args=(job.parent_pid,), daemon=True).start()
        prepare_process({c.config.impl for c in cells}, job.threads)
        data = datasets.load(job.dataset, job.data_dir)
        recorder = PipeRecorder(conn)
        group_runner(cells)(cells, data, recorder, job.peaks, job.options, job.gpu_peaks)
        recorder.sync()           # the last cell's writes: the session waits for them either way
        conn.send(("done", recorder.waited))
        sent = True
    except KeyboardInterrupt:
        _quietly(conn.send, ("interrupted",))
    except (BrokenPipeError, EOFError, ConnectionResetError):
        pass                      # the main process is gone: stop, there is nobody to report to
    except BaseException:
        _quietly(conn.send, ("error", traceback.format_exc()))
    finally:
        conn.close()
    if sent:      # the session waits for this process to end before its next worker starts
        leave(0)  # its exit hooks run, its teardown is skipped


def serve_at(address, authkey: bytes, job: Job, cells: list[Cell]) -> None:
    """A worker whose session runs elsewhere (``benchmarks/fleet.py``): it connects to the
    session's listener and speaks the same messages as over a pipe."""
    from multiprocessing.connection import Client
    _worker(Client(address, authkey=authkey), job, cells)


def _quietly(func, *args):
    try:
        func(*args)
    except OSError:
        pass


@contextmanager
def _signals_deferred():
    """A store write runs to its end: Ctrl-C or SIGTERM arriving during it is raised right
    after, by the handler it would have met. A SQLite transaction interrupted halfway leaves the
    database locked, and the session could then not be marked KILLED (seen in
    tests/test_session.py's Ctrl-C test once a worker stopped waiting for each write)."""
    if threading.current_thread() is not threading.main_thread():
        yield                     # a fleet's host thread (benchmarks/fleet.py): Ctrl-C reaches the main thread only
        return
    got = []
    previous = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if got and callable(previous[got[0]]):
            previous[got[0]](got[0], None)


def _drain(conn, recorder) -> None:
    """Ctrl-C in the main process: what the worker sent before it (a finished cell's close)
    is written before the caller closes the cell in flight KILLED."""
    try:
        while conn.poll(0.5):
            kind, *args = conn.recv()
            if kind not in ("open", "log", "progress", "close"):
                return
            with _signals_deferred():
                getattr(recorder, kind)(*args)
    except (EOFError, OSError):
        pass


def no_progress_seconds(options: BenchOptions) -> float:
    """How long a worker may send nothing before it is ended: ``$BPB_NO_PROGRESS_SECONDS`` when
    set, else ``NO_PROGRESS_BUDGETS`` cell budgets."""
    given = os.environ.get(NO_PROGRESS_ENV)
    if given:
        try:
            seconds = float(given)
        except ValueError:
            seconds = 0.0
        if not 0 < seconds < float("inf"):
            raise UsageError(f"{NO_PROGRESS_ENV}={given!r}: must be a positive number of seconds")
        return seconds
    return NO_PROGRESS_BUDGETS * (options.cell_budget or NO_BUDGET_SECONDS)


class WorkerFailed(Exception):
    """A worker died or raised outside any cell; ``details`` is its traceback or exit code."""

    def __init__(self, reason: str, details: str):
        super().__init__(reason)
        self.details = details


def run_isolated(cells: list[Cell], job: Job, recorder) -> None:
    """Run ``cells`` in a fresh spawned process, relaying its messages to ``recorder``.

    Raises KeyboardInterrupt if the worker was interrupted, WorkerFailed if it died; either
    way the cell in flight is left open on ``recorder`` for the caller to close. While the
    worker is silent, ``recorder.heartbeat()`` is called every ``HEARTBEAT_SECONDS``: one epoch
    of a slow cell on a loaded machine can take minutes, and a log must show that it is alive.
    """
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe(duplex=True)
    proc = start_deaf(ctx.Process(target=_worker, args=(child, job, cells), name=f"bench-{cells[0].config.impl}"))
    child.close()

    def kill():
        proc.kill()            # a stopped process dies of SIGKILL too
        proc.join()

    def died() -> WorkerFailed:
        proc.join()
        return WorkerFailed(f"worker process died (exit code {proc.exitcode})", f"exit code {proc.exitcode}")
    try:
        relay(conn, recorder, no_progress_seconds(job.options), kill, died)
    finally:
        conn.close()
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)


def start_deaf(proc):
    """``proc`` started with SIGINT ignored, which only the new process inherits: Ctrl-C during its
    start-up cannot print a traceback from multiprocessing's bootstrap (``_worker`` listens again)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    return proc


def relay(conn, recorder, limit: float, kill, died, stopping: threading.Event | None = None) -> None:
    """Hand a worker's messages to ``recorder`` until it is done (see ``run_isolated``). ``kill()``
    ends a worker that sent nothing for ``limit`` seconds; ``died()`` says why the connection
    ended without "done" (a ``WorkerFailed``). ``stopping``, when set, ends the wait as Ctrl-C
    would: a fleet's host threads are told so (``benchmarks/fleet.py``)."""
    every = min(HEARTBEAT_SECONDS, limit)
    while True:
        try:
            heard = beat = time.monotonic()
            while not conn.poll(every if stopping is None else min(every, 1.0)):
                now = time.monotonic()
                if stopping is not None and stopping.is_set():
                    raise KeyboardInterrupt("interrupted by the user (Ctrl-C or SIGTERM on the fleet's driver)")
                if stopping is None or now - beat >= every:
                    recorder.heartbeat()
                    beat = now
                if now - heard >= limit:
                    kill()
                    reason = (f"no progress: the worker sent nothing for {limit:g} s (stopped, hung or "
                              f"deadlocked) and was ended")
                    raise WorkerFailed(reason, f"{reason}; the limit is {NO_PROGRESS_BUDGETS} cell budgets "
                                               f"or ${NO_PROGRESS_ENV}")
            kind, *args = conn.recv()
        except (EOFError, OSError):        # died, possibly in the middle of a message
            raise died() from None
        except KeyboardInterrupt:
            _drain(conn, recorder)
            raise
        if kind == "done":
            recorder.waited(*args)
            return
        if kind == "interrupted":
            raise KeyboardInterrupt
        if kind == "error":
            raise WorkerFailed(args[0].strip().splitlines()[-1], args[0])
        if kind == "sync":
            try:
                conn.send("ack")
            except OSError:                # died before reading it; the next recv says how
                pass
            continue
        with _signals_deferred():
            getattr(recorder, kind)(*args)
