"""Helpers shared by the test modules (imported by them; conftest.py holds fixtures only)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, env=None, timeout=600):
    """``python -m benchmarks ARGS`` in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=full_env, timeout=timeout)


def is_outcome(line: str) -> bool:
    """A bench session's line for a finished (or failed) cell: two spaces, then its title
    (``numpy-sample f32 b1 · throughput hw1-q4: ...``); progress lines are indented further."""
    return line.startswith("  ") and not line.startswith("   ") and " · " in line


# GEMM GFLOP/s per peak key (benchmarks/timing.py peak_key) and its spread, for cells run in a test
PEAKS = {"float32": 100.0, "float64": 50.0, "float32_1thread": 60.0, "float64_1thread": 30.0,
         "float32_spread": 0.05, "float64_spread": 0.05, "float32_1thread_spread": 0.04, "float64_1thread_spread": 0.04}


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


def one_line(proc, needle: str) -> None:
    """Exit 2, and stderr is one line holding ``needle``; no traceback anywhere."""
    said = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(said) == 1 and needle in said[0], proc.stderr[-3000:]
