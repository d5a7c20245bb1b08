"""One bench session across a Ray fleet: ``bench --ray ADDRESS``. Every host of the fleet runs
the whole matrix, one session per host, all at once; then the machines report
(``benchmarks/across_machines.py``) puts them side by side.

A host is a Ray node that advertises one ``bench_host`` (``fleet-host`` below starts one). Each
thing a session asks of its host (``benchmarks/hosts.py``: measure, run a group of cells, the end
probe) is a Ray task that asks for that one ``bench_host`` on that node, so one timed thing at a
time runs on each host, in a fresh process (``max_calls=1``). The task spawns the process that
measures with the environment ``ray start`` had (Ray sets OMP_NUM_THREADS=1 in its workers, which
would hold BLAS to one thread): the same isolation as a local session's workers.

Tracking stays in this process, which writes every run: a group's worker connects back here
(``multiprocessing.connection``, with a one-time key) and speaks the same messages as a local
worker over its pipe (``workers.relay``), so it waits at the same sync points and this process
knows every cell in flight. Ray's streaming generators carry messages one way only; the sync
point needs the answer "written". The hosts never touch the store, but a fleet's sessions are
meant for a team, so a store only this machine can open (a SQLite file) is refused.

A host that leaves the cluster: its cell in flight is FAILED "node lost", its later cells are
FAILED as never started, the other hosts go on. Ctrl-C or SIGTERM here: every host's cell in
flight is KILLED and its session too, as in a local session.
"""
from __future__ import annotations

import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Listener
from pathlib import Path

from benchmarks import hosts, workers
from benchmarks.config import UsageError

RESOURCE = "bench_host"
ROOT = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 1.0              # how often a wait on a host looks at Ctrl-C
NODE_DEATH_SECONDS = 30.0       # after a task failed, how long to wait for Ray to say whether its node died


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray (pip install -r requirements.txt)") from None
    return ray


def connect(address: str) -> list[dict]:
    """Join the cluster at ``address``; the alive nodes that advertise a ``bench_host``."""
    ray = _ray()
    _reachable(address)
    # ray.init installs its own SIGTERM handler (sys.exit, which would leave every session
    # RUNNING): the CLI's own handlers stay, so SIGTERM and Ctrl-C stop the fleet as they stop a session
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False,
                 include_dashboard=False)
    except Exception as exc:          # ConnectionError, and what each version raises for a bad address
        raise UsageError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         " (start one with `python -m benchmarks fleet-host --head --label NAME`)") from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    found = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(RESOURCE, 0) >= 1]
    if not found:
        ray.shutdown()
        raise UsageError(f"the Ray cluster at {address} has no host that advertises '{RESOURCE}': start each "
                         "with `python -m benchmarks fleet-host --label NAME --address HEAD`")
    return found


def _reachable(address: str) -> None:
    """A clear error at once for an address nobody answers at (``ray.init`` retries for minutes)."""
    if address == "auto":
        return                        # Ray reads the address of the cluster started on this machine
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {getattr(exc, 'strerror', None) or exc} "
                         "(HOST:PORT of its head, ray://HOST:10001, or auto; start one with "
                         "`python -m benchmarks fleet-host --head --label NAME`)") from None


def _alive(node_id: str) -> bool:
    return any(n["NodeID"] == node_id and n.get("Alive") for n in _ray().nodes())


def _gone(node_id: str) -> bool:
    """After a task failed: whether its node left the cluster. Ray marks a node dead only after
    its health checks fail (about 15 s by default), so a task whose node died may fail first."""
    deadline = time.monotonic() + NODE_DEATH_SECONDS
    while _alive(node_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(WAIT_SECONDS)
    return True


class RayHost:
    """One host of the fleet, as ``benchmarks/hosts.py``'s ``Local`` is this machine."""

    def __init__(self, node: dict, stopping: threading.Event):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        self.node_id, self.stopping = node["NodeID"], stopping
        self.place = dict(num_cpus=0, resources={RESOURCE: 1}, max_retries=0,
                          scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False))
        self.label, self.name = self._wait(self._submit(hosts.who_here))
        self.tags = {"bpb.fleet_host": self.name, "bpb.ray_node": self.node_id}

    def _submit(self, func, *args):
        return _ray().remote(max_calls=1)(func).options(**self.place).remote(*args)

    def _lost(self, detail: str = "") -> workers.WorkerFailed:
        who = f"{self.name} ({self.label})" if hasattr(self, "label") else f"node {self.node_id[:12]}"
        reason = f"node lost: host {who} left the Ray cluster"
        return workers.WorkerFailed(reason, f"{reason}\n{detail}".strip())

    def _wait(self, ref):
        """The task's answer; Ctrl-C here (``stopping``) cancels it; a lost node is ``WorkerFailed``."""
        ray = _ray()
        while not ray.wait([ref], timeout=WAIT_SECONDS)[0]:
            if self.stopping.is_set():
                ray.cancel(ref, force=True)
                raise KeyboardInterrupt("interrupted by the user (Ctrl-C or SIGTERM on the fleet's driver)")
            if not _alive(self.node_id):
                raise self._lost()
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            if _gone(self.node_id):
                raise self._lost(str(exc)) from None
            raise workers.WorkerFailed(f"on host {self.name}: {str(exc).strip().splitlines()[-1]}", str(exc)) from None

    def measure(self, *args, log=print) -> hosts.Measured:
        measured, lines = self._wait(self._submit(hosts.measure_fresh, *args))
        for line in lines:
            log(line)
        return measured

    def end_probe(self, threads: int, dry_run: bool):
        try:
            return self._wait(self._submit(hosts.end_probe_fresh, threads, dry_run))
        except workers.WorkerFailed:            # the host is gone: its cells say so, the session ends
            from benchmarks.peaks import PeakProbe
            return PeakProbe("float32", threads, 0, 0.0)

    def run_group(self, cells, job: workers.Job, recorder) -> None:
        """The cells in a fresh process on this host, which connects back and speaks as a local worker."""
        if not _alive(self.node_id):
            raise self._lost()
        key = secrets.token_bytes(32)
        listener = Listener(("0.0.0.0", 0), authkey=key)
        ray = _ray()
        address = (ray.util.get_node_ip_address(), listener.address[1])
        ref = self._submit(hosts.group_fresh, address, key, replace(job, data_dir=None, parent_pid=None), cells)
        accepted: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: accepted.put(_accept(listener)), daemon=True).start()
        conn = None
        try:
            while conn is None:
                try:
                    conn = accepted.get(timeout=WAIT_SECONDS)
                except queue.Empty:
                    if self.stopping.is_set() or ray.wait([ref], timeout=0)[0]:
                        self._wait(ref)           # raises: interrupted, the node lost, the task failed
                        raise workers.WorkerFailed("the worker ended before it connected", "no connection")
                    continue
                if isinstance(conn, Exception):
                    raise workers.WorkerFailed(f"the worker could not connect: {conn}", repr(conn))

            def died() -> workers.WorkerFailed:
                try:
                    code = self._wait(ref)
                except workers.WorkerFailed as exc:
                    return exc
                return workers.WorkerFailed(f"worker process died on host {self.name} (exit code {code})",
                                            f"exit code {code}")
            workers.relay(conn, recorder, workers.no_progress_seconds(job.options),
                          lambda: ray.cancel(ref, force=True), died, self.stopping)
        finally:
            if conn is not None and not isinstance(conn, Exception):
                conn.close()
            listener.close()
            if not ray.wait([ref], timeout=0)[0]:
                ray.cancel(ref, force=True)


def _accept(listener):
    try:
        return listener.accept()
    except Exception as exc:          # closed, or the key did not match
        return exc


def check_first(address: str, uri: str, machine: str | None) -> None:
    """Before anything is written: a fleet's sessions go to a store the team can reach, its hosts
    are labelled where they start, and its head answers."""
    if not uri.startswith(("http://", "https://", "postgresql")):
        raise UsageError(f"a fleet's sessions need a store every member of the team can reach, not "
                         f"{uri.split('://')[0]}: start one with `python -m benchmarks server` and pass its "
                         "address with --tracking-uri")
    if machine:
        raise UsageError("--machine labels this machine; a fleet's hosts are labelled by `fleet-host --label`")
    _reachable(address)


def run_fleet(address: str, options, data, store, settings, log=print) -> int:
    """Every host runs ``options``' matrix in a session of its own, at once; then the machines
    report. Returns 1 when a cell failed anywhere."""
    from benchmarks.across_machines import run_machines_report
    from benchmarks.session import run_session
    nodes = connect(address)
    stopping = threading.Event()
    fleet = [RayHost(node, stopping) for node in nodes]
    labels = [h.label for h in fleet]
    log(f"fleet at {address}: {len(fleet)} hosts: " + ", ".join(f"{h.label} ({h.name})" for h in fleet))
    results: dict[str, tuple[int, str] | BaseException] = {}

    def one(host: RayHost) -> None:
        mine = replace(settings, host=host, machine_label=host.label, pytest_benchmark=False, isolate=True,
                       out_dir=str(Path(settings.out_dir) / f"fleet-{host.label}"))
        try:
            results[host.label] = run_session(options, data, store, mine, log=lambda text: log(f"[{host.label}] {text}"))
        except BaseException as exc:    # the session is closed KILLED or FAILED already (session.abort)
            results[host.label] = exc

    threads = [threading.Thread(target=one, args=(h,), name=f"fleet-{h.label}") for h in fleet]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(WAIT_SECONDS)
    except KeyboardInterrupt:
        stopping.set()
        for t in threads:
            t.join()
        raise
    failed = {label: r for label, r in results.items() if isinstance(r, BaseException)}
    for label, exc in failed.items():
        log(f"[{label}] session ended: {type(exc).__name__}: {exc}")
    done = [results[label][1] for label in labels if label not in failed]
    if len(done) > 1:
        run_machines_report(store, done, settings.out_dir, log=log)
    if failed and not done:
        raise next(iter(failed.values()))
    return 1 if failed or any(results[label][0] for label in labels if label not in failed) else 0


def start_host(label: str, address: str | None, port: int = 6379) -> int:
    """``fleet-host``: ``ray start`` for this machine as a host of the fleet: one ``bench_host``,
    no CPUs for other Ray work, its label in the environment of every process it starts, and the
    project importable there. ``address`` None: the fleet's head, on ``port``."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        raise UsageError("fleet-host needs Ray (pip install -r requirements.txt)")
    env = {**os.environ, hosts.LABEL_ENV: label, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    where = (["--head", f"--port={port}", "--include-dashboard=false"] if address is None
             else [f"--address={address}"])
    cmd = [str(ray_cli), "start", *where, "--num-cpus=0", f'--resources={{"{RESOURCE}": 1}}', "--disable-usage-stats"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(f"ray start failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    said = re.search(r"--address='([^']+)'", done.stdout)       # ray start names the head as the others reach it
    head = address or (said.group(1) if said else f"{socket.gethostname()}:{port}")
    print(f"host '{label}' joined the fleet at {head}; run the matrix on every host with "
          f"`python -m benchmarks bench --ray {head} --tracking-uri http://SERVER:5000`; stop it with `ray stop`")
    return 0
