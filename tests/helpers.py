"""Helpers shared by the test modules (imported by them; conftest.py holds fixtures only)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from tracking.peaks import Peak, Peaks

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread in this process for the block. In-process torch training in the test
    run: beside the other pytest worker's processes, a two-thread torch spends its time waiting in
    OpenMP barriers for a thread the machine has not scheduled (a batch-1 parity row of
    tests/test_conformance.py took 40-48 s beside two busy loops, 2 s beside one)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def one_blas_thread():
    """numpy's and scipy's BLAS on one thread in this process for the block, for the same reason as
    ``one_torch_thread``: beside the other pytest worker, sklearn-mlp's batch-1 parity rows took
    7 s each on OpenBLAS's two threads, 1 s alone."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# what the tests' sessions run with: their lines as they are written, CI's plain output
SESSION_ENV = {"PYTHONUNBUFFERED": "1", "CI": "1"}


def brief_probes(mp: pytest.MonkeyPatch) -> None:
    """A session run in this process probes as a dry run does (benchmarks/peaks.py DRY_RUN_PROBE,
    benchmarks/shape_peaks.py DRY_RUN_SECONDS), whatever its mode: for tests that read no peak. The
    full probes cost a gate session 13 s here, and stay covered by tests/test_gate.py's session."""
    import inspect
    from benchmarks import peaks, shape_peaks

    def as_dry_run(probe):
        signature = inspect.signature(probe)

        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.arguments["dry_run"] = True
            return probe(*bound.args, **bound.kwargs)
        return call
    for module, name in ((peaks, "session_probes"), (peaks, "end_probe"), (shape_peaks, "session_shape_peaks")):
        mp.setattr(module, name, as_dry_run(getattr(module, name)))


def start_cli(*args, env=None, cwd=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=False):
    """``python -m benchmarks ARGS`` started and not waited for (text pipes), with this process's
    environment and ``env`` over it: a child of the prewarmed parent (tests/prewarm.py), or a
    fresh interpreter where the environment asks for one."""
    from tests import prewarm
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return prewarm.start(args, env=full_env, cwd=cwd or ROOT, stdout=stdout, stderr=stderr,
                         start_new_session=start_new_session)


def run_cli(*args, cwd=None, env=None, timeout=600):
    """``python -m benchmarks ARGS``, waited for; returns CompletedProcess (text)."""
    proc = start_cli(*args, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def popen_cli(*args, env=None):
    """``python -m benchmarks ARGS`` started and not waited for (text pipes)."""
    return start_cli(*args, env=env)


def is_outcome(line: str) -> bool:
    """A bench session's line for a finished (or failed) cell: two spaces, then its title
    (``numpy-sample f32 b1 · throughput hw1-q4: ...``); progress lines are indented further."""
    return line.startswith("  ") and not line.startswith("   ") and " · " in line


# the measured peaks (tracking/peaks.py) of the cells run in a test: GFLOP/s and spread
PEAKS = Peaks((Peak("float32", False, 100.0, 0.05), Peak("float64", False, 50.0, 0.05),
               Peak("float32", True, 60.0, 0.04), Peak("float64", True, 30.0, 0.04)))


class Recorder:
    """A recorder (benchmarks/cells.py) that keeps everything in lists: opened cells and their
    params, (metrics, tags, step) logged, progress lines, heartbeats and closed outcomes."""

    def __init__(self):
        self.opened, self.logged, self.lines, self.closed, self.beats = [], [], [], [], 0
        self.params = {}

    def open(self, cell, params, tags):
        self.opened.append(cell)
        self.params = params

    def log(self, metrics=None, tags=None, step=0, series=None, params=None):
        self.logged.append((metrics or {}, tags or {}, step))
        self.params = {**self.params, **(params or {})}

    def progress(self, text):
        self.lines.append(text)

    def heartbeat(self):
        self.beats += 1

    def sync(self):
        self.syncs = getattr(self, "syncs", 0) + 1

    def close(self, outcome, details=None, waited=None):
        self.closed.append(outcome)
        self.waits = [*getattr(self, "waits", []), waited]

    def waited(self, seconds=0.0):
        self.after = seconds


def verdict_rows(text: str) -> list[list[str]]:
    """The rows of a gate's verdict table (benchmarks/regress.py ``print_table``), split into columns."""
    import re
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()
            if re.match(r"^(speed/)?hw1-q[34]/", line)]


def sqlite_uri(folder: Path, name: str = "mlflow.db") -> str:
    return f"sqlite:///{folder / name}"


def fill(mnt: Path) -> None:
    """Fill the file system of ``mnt`` to the last byte."""
    with open(mnt / "filler", "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass


def fake_session(uri: str, mode: str, status: str = "FINISHED", cells: dict | None = None, tags: dict | None = None,
                 epochs: int = 3) -> str:
    """A session written straight into the store, without training: its parent run (``mode``,
    ended ``status``; "RUNNING" leaves it open) and one cell per ``cells`` entry, name ->
    (test accuracy or None for a throughput cell, samples/s), with ``epochs`` points of
    samples/s history. Returns the session's run id."""
    import tracking
    session = tracking.Session.start(tracking.connect(uri), name=f"fake {mode}", params={"mode": mode},
                                     tags={"git_commit": "0" * 40, "dataset": "fashion-mnist", **(tags or {})})
    for name, (accuracy, rate) in (cells or {}).items():
        kind, impl, preset, dtype, batch, seed = name.split("/")
        run_id = session.open_cell(name, {"preset": preset, "dtype": dtype, "batch_size": batch[1:], "seed": seed[1:],
                                          "sizes": "784,32,32,10", "activation": "sigmoid", "epochs": epochs},
                                   {"bpb.cell": name, "bpb.cell_kind": kind, "implementation": impl, "device": "cpu"})
        history = "epoch/samples_per_second" if kind == "accuracy" else "repeat/samples_per_second"
        for step in range(1, epochs + 1):
            session.log(run_id, metrics={history: rate * (1 + 0.001 * step)}, step=step)
        summary = {"samples_per_second_median": rate, "samples_per_second_q1": rate, "samples_per_second_q3": rate,
                   "parity_max_error": 1e-7}
        session.log(run_id, metrics={**summary, **({"test_accuracy": accuracy} if accuracy is not None else {})})
        session.end_cell(run_id, "FINISHED")
    if status != "RUNNING":
        session.finish(status, None if status == "FINISHED" else f"made {status} by a test")
    return session.run_id


def fake_profile(uri: str, label: str, mode: str, cuts: dict[str, float], commit: str, folder: Path) -> str:
    """A noise profile written straight into the store, as ``calibrate`` logs one (a run of kind
    calibration with its calibration.json): machine ``label``, ``mode`` sessions, per cell its
    calibrated cut (the detectable slowdown set at twice it), measured at ``commit``. Returns the
    run id."""
    import json
    import math

    import tracking
    from reports.noise import Z_ALARM
    numbers = {cell: {"cut": cut, "sigma": cut / (Z_ALARM * math.sqrt(2)), "drift": 0.0,
                      "detectable": math.expm1(2 * cut)} for cell, cut in cuts.items()}
    saved = folder / "calibration.json"
    saved.write_text(json.dumps({"numbers": numbers, "measured": {"git_commit": commit, "versions": {}, "threads": "?"}}))
    run = tracking.Session.start(tracking.connect(uri), name=f"calibration-{label}",
                                 params={"mode": mode, "count": 5, "sessions": "a,b,c,d,e"},
                                 tags={"bpb.kind": "calibration", "bpb.machine": label})
    run.log_artifact(saved, "calibration")
    run.finish("FINISHED")
    return run.run_id


def one_line(proc, needle: str) -> None:
    """Exit 2, and stderr is one line holding ``needle``; no traceback anywhere."""
    said = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(said) == 1 and needle in said[0], proc.stderr[-3000:]


def tmpfs(folder, size: str):
    """A tmpfs of ``size`` mounted at ``folder`` (made here) while the caller's block runs;
    skips the test where none can be mounted (not root, or no mount here)."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)])
