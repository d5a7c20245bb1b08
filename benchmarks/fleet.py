"""One bench command across a Ray fleet: ``bench --ray ADDRESS``. A host is a Ray node that
advertises one ``bench_host`` (``fleet-host`` below starts one; ``benchmarks/ray_host.py`` is
how a session uses it). ``--hosts all``: every host runs the whole matrix, a session per host,
all at once; then the machines report (``benchmarks/across_machines.py``) puts the labels side
by side. ``--hosts shard``: the hosts that share a machine label share one session's matrix
(``Shard``), each group of cells on whichever of them is free, to finish sooner; a label's cells
are compared only with that label's.

Tracking stays in this process, which writes every run (``benchmarks/ray_host.py``). The hosts
never touch the store, but a fleet's sessions are meant for a team, so a store only this machine
can open (a SQLite file) is refused.

A host that leaves the cluster: its cell in flight is FAILED "node lost", its later cells are
FAILED as never started (a shard's other hosts take the groups not yet begun), the other hosts
go on. Ctrl-C or SIGTERM here: every host's cell in flight is KILLED and its session too, as in
a local session.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from dataclasses import replace
from pathlib import Path

import tracking
from benchmarks import hosts, workers
from benchmarks.config import UsageError
from benchmarks.ray_host import RESOURCE, WAIT_SECONDS, RayHost, ray_api

ROOT = Path(__file__).resolve().parents[1]


def connect(address: str) -> list[dict]:
    """Join the cluster at ``address``; the alive nodes that advertise a ``bench_host``."""
    ray = ray_api()
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


class Shard:
    """The hosts of one label sharing one session's matrix: measured on the first of them, each
    group of cells on whichever host is free, at once; each cell tagged with the host it ran on.
    A lost host's cell in flight is FAILED "node lost"; the groups it had not begun go to the
    others. Anything else that ends one host's work (Ctrl-C, a broken store) stops them all."""

    def __init__(self, members: list[RayHost]):
        self.members, self.label = members, members[0].label
        self.name = f"{len(members)} hosts of {self.label}"
        self.tags = {"bpb.fleet_host": ", ".join(h.name for h in members), "bpb.hosts": "shard",
                     "bpb.ray_node": ", ".join(h.node_id for h in members)}
        self.halt = threading.Event()           # one member's error stops the others' cells too
        for host in members:
            host.stopping = _Either(host.stopping, self.halt)

    def measure(self, *args, log=print) -> hosts.Measured:
        return self.members[0].measure(*args, log=log)

    def end_probe(self, threads: int, dry_run: bool):
        alive = [h for h in self.members if h.alive()] or self.members
        return alive[0].end_probe(threads, dry_run)

    def run_groups(self, groups, job: workers.Job, recorder, failed) -> float:
        """Every group once, on the first member free; returns the seconds of tracking calls
        the members' threads made. Raises the first error that ended a member's work."""
        todo, errors, spent = deque(groups), [], []

        def work(host: RayHost, twin) -> None:
            before = tracking.spent()[0]
            try:
                while not self.halt.is_set():
                    try:
                        cells = todo.popleft()
                    except IndexError:
                        return
                    try:
                        host.run_group(cells, job, twin)
                    except workers.WorkerFailed as exc:
                        lost = not host.alive()
                        if lost and not any(c.name in twin.run_ids for c in cells):
                            todo.appendleft(cells)      # never begun: another member runs it
                            return
                        failed(cells, exc, twin)
                        if lost:
                            return
            except BaseException as exc:            # Ctrl-C on the driver, a broken store: the session ends
                errors.append(exc)
                self.halt.set()
            finally:
                spent.append(tracking.spent()[0] - before)

        twins = [recorder.beside(h.tags, f"{h.name} ({h.node_id[:6]}): ") for h in self.members]
        threads = [threading.Thread(target=work, args=(h, twin), name=f"shard-{h.name}-{h.node_id[:6]}")
                   for h, twin in zip(self.members, twins)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for twin in twins:
            recorder.gather(twin)
        if errors:
            raise errors[0]                             # the cause; the others were stopped by it
        gone = workers.WorkerFailed(f"node lost: no host of {self.label} is left in the Ray cluster",
                                    f"every host of {self.label} left the Ray cluster: "
                                    + ", ".join(f"{h.name} ({h.node_id})" for h in self.members))
        for cells in todo:                              # every member lost
            failed(cells, gone, recorder)
        return sum(spent)


class _Either:
    """Set when either event is: a shard member stops on Ctrl-C or when its shard halts."""

    def __init__(self, *events):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def sessions(fleet: list[RayHost], shard: bool) -> list[tuple[str, object]]:
    """(name, host) of each session: a host each, or (``shard``) a label each. A name is the
    label, numbered where several sessions share one."""
    by_label: dict[str, list[RayHost]] = {}
    for host in fleet:
        by_label.setdefault(host.label, []).append(host)
    if shard:
        return [(label, members[0] if len(members) == 1 else Shard(members)) for label, members in by_label.items()]
    return [(label if len(members) == 1 else f"{label}-{i}", host)
            for label, members in by_label.items() for i, host in enumerate(members, start=1)]


def run_fleet(address: str, options, data, store, settings, shard: bool = False, log=print) -> int:
    """``options``' matrix on every host (or, ``shard``, on every label) in a session of its
    own, at once; then the machines report. Returns 1 when a cell failed anywhere."""
    from benchmarks.across_machines import run_machines_report
    from benchmarks.session import run_session
    nodes = connect(address)
    stopping = threading.Event()
    fleet = [RayHost(node, stopping) for node in nodes]
    planned = sessions(fleet, shard)
    log(f"fleet at {address}: {len(fleet)} hosts: " + ", ".join(f"{h.label} ({h.name})" for h in fleet) +
        "".join(f"; {name}'s matrix shared by {len(h.members)} hosts" for name, h in planned if isinstance(h, Shard)))
    machines: dict[str, list[RayHost]] = {}
    for host in fleet:
        machines.setdefault(host.address, []).append(host)
    for where, here in machines.items():
        if len(here) > 1:
            log(f"note: {len(here)} hosts are one machine ({where}): their cells run at once there and contend "
                "for its cores, so their figures are not that machine's own")
    results: dict[str, tuple[int, str] | BaseException] = {}
    # each session's thread sets its event when it has closed its session. The main thread waits on
    # these, not on Thread.join: on Python 3.11, a join that Ctrl-C or SIGTERM interrupts marks the
    # thread it waited for as ended while it still runs (threading.py, bpo-45274), so the join
    # after it returned at once, the driver exited, and that host's session was left RUNNING
    ended = {name: threading.Event() for name, _ in planned}

    def one(name: str, host) -> None:
        mine = replace(settings, host=host, machine_label=host.label, pytest_benchmark=False, isolate=True,
                       out_dir=str(Path(settings.out_dir) / f"fleet-{name}"))
        try:
            results[name] = run_session(options, data, store, mine, log=lambda text: log(f"[{name}] {text}"))
        except BaseException as exc:    # the session is closed KILLED or FAILED already (session.abort)
            results[name] = exc
        finally:
            ended[name].set()

    for unit in planned:
        threading.Thread(target=one, args=unit, name=f"fleet-{unit[0]}").start()
    try:
        for event in ended.values():
            while not event.wait(WAIT_SECONDS):
                pass
    except KeyboardInterrupt:
        stopping.set()
        for event in ended.values():
            event.wait()
        raise
    names = [name for name, _ in planned]
    failed = {name: r for name, r in results.items() if isinstance(r, BaseException)}
    for name, exc in failed.items():
        log(f"[{name}] session ended: {type(exc).__name__}: {exc}")
    done = [results[name][1] for name in names if name not in failed]
    if len(done) > 1:
        run_machines_report(store, done, settings.out_dir, log=log)
    if failed and not done:
        raise next(iter(failed.values()))
    return 1 if failed or any(results[name][0] for name in names if name not in failed) else 0


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
