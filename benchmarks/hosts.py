"""Where a session's measurements are taken: this machine (``LOCAL``), or a fleet's host
(``benchmarks/ray_host.py``'s ``RayHost``, which runs the same functions there), or the hosts
of one label that share the matrix (``benchmarks/fleet.py``'s ``Shard``). A session asks its
host three things: ``measure`` (the thread count and why, the inventory, the start peak probes:
before the first cell), ``run_groups`` (each implementation's cells in a fresh process,
``benchmarks/workers.py``) and ``end_probe`` (after the last cell). What is measured is the
host's, so a session's record describes the machine its cells ran on.

This module imports neither mlflow nor pandas: a fleet's host imports it to measure.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
from dataclasses import dataclass, replace

from benchmarks import gpu, peaks as peak_probes, shape_peaks, workers
from benchmarks.inventory import STARTED_WITH, THREAD_ENV_KEYS, inventory as machine_inventory
from benchmarks.threads import default_threads, pin_threads


@dataclass
class Measured:
    """What a session finds on its host before its first cell."""
    threads: int
    reason: str                           # why that thread count
    pinned: object                        # ``pin_threads``' answer
    inventory: dict
    probes: dict                          # (dtype, on one thread) -> PeakProbe
    peaks: object                         # tracking.peaks.Peaks
    shapes: dict                          # shape key -> ShapePeak (benchmarks/shape_peaks.py)


def measure_here(threads: int | None, reason: str, one_thread_dtypes: set[str], dry_run: bool, wants_gpu: bool,
                 shapes=(), log=print) -> Measured:
    """The threads chosen (``threads`` None: ``default_threads``, from the cores and the load)
    and pinned, the inventory, the start probes: of the machine this runs on. ``shapes``: the
    (sizes, batch, dtype) of the batch cells on the CPU, whose shape peaks are measured."""
    thread_env = STARTED_WITH               # as the user set them
    threads, reason = default_threads() if threads is None else (threads, reason)
    pinned = pin_threads(threads)
    inventory = machine_inventory()
    # the session's tag says what its line says (benchmarks/inventory.py STARTED_WITH)
    inventory["thread_env"] = " ".join(f"{k}={v}" for k, v in thread_env.items()) or "unset"
    log(f"threads {threads}: {reason}; thread-pool variables "
        f"{' '.join(f'{k}={v}' for k, v in thread_env.items()) or 'none set'}")
    probes = peak_probes.session_probes(one_thread_dtypes, threads, dry_run, log)
    shape = shape_peaks.session_shape_peaks(shapes, threads, dry_run, log)
    peaks = peak_probes.record(probes, gpu.session_peaks(wants_gpu, log), shape,
                               peak_probes.DRY_RUN_RULE if dry_run else peak_probes.PEAK_RULE)
    return Measured(threads, reason, pinned, inventory, probes, peaks, shape)


def one_by_one(run_group, groups, job: workers.Job, recorder, failed) -> float:
    """Each group of cells in turn, ``run_group(cells, job, recorder)``; a group whose worker
    failed goes to ``failed(cells, exc, recorder)``, and the next group runs. Returns the
    seconds of tracking calls made in other threads: none."""
    for cells in groups:
        try:
            run_group(cells, job, recorder)
        except workers.WorkerFailed as exc:
            failed(cells, exc, recorder)
    return 0.0


class Local:
    """This machine: the session's own process measures, and spawns its workers."""
    name = None                           # the session is named after this host
    tags: dict = {}

    @staticmethod
    def measure(*args, log=print) -> Measured:
        return measure_here(*args, log=log)

    @staticmethod
    def run_groups(groups, job: workers.Job, recorder, failed) -> float:
        return one_by_one(workers.run_isolated, groups, job, recorder, failed)

    @staticmethod
    def end_probe(threads: int, dry_run: bool):
        return peak_probes.end_probe(threads, dry_run)


LOCAL = Local()


# On a host of a Ray fleet (benchmarks/fleet.py): each function below is one Ray task, in a Ray
# worker process of its own, that does its work in a fresh process spawned with the environment
# `ray start` had: Ray sets OMP_NUM_THREADS=1 in its workers (a task that asks for no CPU), which
# would hold BLAS to one thread.

LABEL_ENV = "BPB_MACHINE"       # a host's machine label, in the environment of its `ray start`


def who_here() -> tuple[str, str]:
    """(this host's machine label: $BPB_MACHINE of its `ray start`, else its name; its name)."""
    return os.environ.get(LABEL_ENV) or socket.gethostname(), socket.gethostname()


def _as_started() -> None:
    """This process's thread-pool variables put back as the raylet that started it had them."""
    try:
        with open(f"/proc/{int(os.environ['RAY_RAYLET_PID'])}/environ", "rb") as f:
            raylet = dict(item.decode(errors="replace").split("=", 1) for item in f.read().split(b"\0") if b"=" in item)
    except (KeyError, ValueError, OSError):
        return
    for key in [k for k in os.environ if k.startswith(THREAD_ENV_KEYS)]:
        if key not in raylet:
            del os.environ[key]
    os.environ.update({k: v for k, v in raylet.items() if k.startswith(THREAD_ENV_KEYS)})


def _in_fresh_process(target, *args):
    """``target(conn, *args)`` in a fresh spawned process; what it sends back."""
    _as_started()
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe(duplex=False)
    proc = workers.start_deaf(ctx.Process(target=target, args=(theirs, *args)))
    theirs.close()
    try:
        return mine.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"the measuring process died (exit code {proc.exitcode})") from None
    finally:
        proc.join(timeout=30)


def _measure(conn, *args) -> None:
    lines: list[str] = []
    conn.send((measure_here(*args, log=lines.append), lines))


def _end_probe(conn, threads: int, dry_run: bool) -> None:
    conn.send(peak_probes.end_probe(threads, dry_run))


def measure_fresh(*args) -> tuple[Measured, list[str]]:
    return _in_fresh_process(_measure, *args)


def end_probe_fresh(threads: int, dry_run: bool):
    return _in_fresh_process(_end_probe, threads, dry_run)


def group_fresh(address, authkey: bytes, job: workers.Job, cells) -> int | None:
    """The cells in a fresh process that connects to the session at ``address``; its exit code.
    It dies with this task: its parent is this process (``workers.Job.parent_pid``)."""
    _as_started()
    ctx = mp.get_context("spawn")
    job = replace(job, parent_pid=os.getpid())
    proc = workers.start_deaf(ctx.Process(target=workers.serve_at, args=(address, authkey, job, cells),
                                          name=f"bench-{cells[0].config.impl}"))
    proc.join()
    return proc.exitcode
