"""One host of a Ray fleet, as a session sees it (``benchmarks/hosts.py``'s ``Local`` is this
machine): a Ray node that advertises one ``bench_host``. Each thing a session asks of it
(measure, run a group of cells, the end probe) is a Ray task that asks for that one
``bench_host`` on that node, so one timed thing at a time runs on each host, in a fresh process
(``max_calls=1``).

A group's worker on the host connects back to this process (``multiprocessing.connection``,
with a one-time key) and speaks the same messages as a local worker over its pipe
(``workers.relay``), so it waits at the same sync points and this process knows every cell in
flight. Ray's streaming generators carry messages one way only; the sync point needs the answer
"written".
"""
from __future__ import annotations

import queue
import secrets
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Listener

from benchmarks import hosts, workers
from benchmarks.config import UsageError

RESOURCE = "bench_host"
WAIT_SECONDS = 1.0              # how often a wait on a host looks at Ctrl-C
NODE_DEATH_SECONDS = 30.0       # after a task failed, how long to wait for Ray to say whether its node died


def ray_api():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray (pip install -r requirements.txt)") from None
    return ray


def _alive(node_id: str) -> bool:
    return any(n["NodeID"] == node_id and n.get("Alive") for n in ray_api().nodes())


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
        self.address = node.get("NodeManagerAddress", "")       # the machine's, shared by its nodes
        self.place = dict(num_cpus=0, resources={RESOURCE: 1}, max_retries=0,
                          scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False))
        self.label, self.name = self._wait(self._submit(hosts.who_here))
        self.tags = {"bpb.fleet_host": self.name, "bpb.ray_node": self.node_id}

    def alive(self) -> bool:
        """Whether this host's node is still in the cluster."""
        return _alive(self.node_id)

    def _submit(self, func, *args):
        return ray_api().remote(max_calls=1)(func).options(**self.place).remote(*args)

    def _lost(self, detail: str = "") -> workers.WorkerFailed:
        who = f"{self.name} ({self.label})" if hasattr(self, "label") else f"node {self.node_id[:12]}"
        reason = f"node lost: host {who} left the Ray cluster"
        return workers.WorkerFailed(reason, f"{reason}\n{detail}".strip())

    def _wait(self, ref):
        """The task's answer; Ctrl-C here (``stopping``) cancels it; a lost node is ``WorkerFailed``."""
        ray = ray_api()
        while not ray.wait([ref], timeout=WAIT_SECONDS)[0]:
            if self.stopping.is_set():
                ray.cancel(ref, force=True)
                raise KeyboardInterrupt("interrupted by the user (Ctrl-C or SIGTERM on the fleet's driver)")
            if not self.alive():
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
        """The probe after the last cell; None when the host is gone (its cells say so)."""
        try:
            return self._wait(self._submit(hosts.end_probe_fresh, threads, dry_run))
        except workers.WorkerFailed:
            return None

    def run_groups(self, groups, job: workers.Job, recorder, failed) -> float:
        return hosts.one_by_one(self.run_group, groups, job, recorder, failed)

    def run_group(self, cells, job: workers.Job, recorder) -> None:
        """The cells in a fresh process on this host, which connects back and speaks as a local worker."""
        if not self.alive():
            raise self._lost()
        key = secrets.token_bytes(32)
        listener = Listener(("0.0.0.0", 0), authkey=key)
        ray = ray_api()
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
