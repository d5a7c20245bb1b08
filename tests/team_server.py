"""The team server as the tests start it: ``python -m benchmarks server`` (and the
PostgreSQL it uses) in a process group of its own, sessions against it, and the process
table read from /proc. Used by tests/test_server.py and tests/test_server_children.py."""
import collections
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow

from tests.helpers import SESSION_ENV, ROOT, start_cli

# One thread for all: the default count is chosen per session by a probe (benchmarks/threads.py),
# and float32 GEMMs round differently on 1 and 2 threads, so sessions compared value for value
# must run on the same count. One process each (--no-isolate): these tests are about the server,
# and eight sessions at once spawned sixteen workers on two cores; the sessions of a fleet
# (tests/test_fleet.py) run their cells in spawned workers against the server.
SMALL = ("bench", "--dry-run", "--impl", "numpy-sample,numpy-batch", "--threads", "1", "--no-isolate")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), **SESSION_ENV}       # the server: a fresh Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m benchmarks server`` in a process group of its own, output to a file."""

    def __init__(self, pg_dir: Path, folder: Path, *extra, env=None, port=None):
        self.port, self.folder, self.env = port or free_port(), folder, {**ENV, **(env or {})}
        folder.mkdir(parents=True, exist_ok=True)
        self.args = ["server", "--pg-dir", str(pg_dir), "--port", str(self.port), "--workers", "1",
                     "--artifacts-destination", str(folder / "artifacts"), *extra]
        self.url, self.log, self.proc, self.starts = f"http://127.0.0.1:{self.port}", folder / "server.log", None, 0

    def start(self, timeout=180):
        self.starts += 1
        out = open(self.log, "a")
        # a fresh interpreter, not a child of the prewarmed parent (tests/prewarm.py): the process
        # table must show the server's own command line, as it names the holder of a port
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks", *self.args], cwd=ROOT, env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            ready = re.findall(r"MLflow server ready at \S+ \(pid (\d+)\)", self.log.read_text())
            if len(ready) == self.starts:
                self.mlflow_pid = int(ready[-1])
                return self
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.3)
        raise AssertionError("server not ready:\n" + self.log.read_text()[-3000:])

    def kill_mlflow(self):
        """kill -9 of the mlflow server and its workers, as a crash would; the wrapper then exits."""
        os.killpg(self.mlflow_pid, signal.SIGKILL)
        assert self.proc.wait(timeout=60) == 1

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def bench(url, out, *extra, env=None):
    return start_cli(*SMALL, "--tracking-uri", url, "--output-dir", str(out), *extra, env={**SESSION_ENV, **(env or {})},
                     stderr=subprocess.STDOUT)


def sessions(url):
    client = mlflow.MlflowClient(url)
    exp = client.get_experiment_by_name("backprop-bench")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    by_parent = collections.defaultdict(list)
    for run in runs:
        by_parent[run.data.tags.get("mlflow.parentRunId")].append(run)
    return client, [r for r in runs if r.data.tags.get("bpb.kind") == "session"], by_parent


def processes() -> dict:
    """pid -> (parent pid, process group, command line) of every live process."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), int(fields[2]), cmdline)
    return found


def group(pgid: int) -> list[int]:
    return [pid for pid, (_, g, _) in processes().items() if g == pgid]


def eventually(condition, seconds: float = 90) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return condition()


def end_mlflow_group(pgid: int) -> None:
    """Clean up after a failing test: kill what is left of the mlflow server's group."""
    if any("mlflow" in cmd or "uvicorn" in cmd for pid, (_, g, cmd) in processes().items() if g == pgid):
        os.killpg(pgid, signal.SIGKILL)


def serves(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False
