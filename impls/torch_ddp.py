"""torch-ddp: data-parallel training on torch.distributed, DistributedDataParallel over gloo.

``world_size`` ranks (default: the threads this process may use, at most 4), each a process of its
own (impls/ddp_rank.py) holding a replica. Every batch of the harness's order is split into
``world_size`` contiguous shares; each rank computes its share's gradient, DDP all-reduces the
mean, and every rank steps the same optimizer, so the replicas stay equal and the math is
torch-cpu's at the same global batch (tests/test_ddp.py holds it to the parity table). Each
rank gets ``threads // world_size`` threads: a cell uses the cores it was given and no more.

The ranks start once per process and per (world size, threads) and serve every instance after
that (``_Ranks``), so the start-up (a few seconds of torch imports and a rendezvous) is paid once,
outside every timed epoch, like a compile. An epoch sends the order to rank 0, which broadcasts it;
the training set goes to the ranks once per array. The ranks end with this process, whatever
ends it: a ``close()``, the interpreter's exit, or a kill -9 (impls/ddp_rank.py ``_die_with``; the
signal follows the thread that started them, so an instance is made in a thread that outlives it).

Across hosts, as torchrun does it: with ``MASTER_ADDR`` and ``MASTER_PORT`` set, only rank 0
starts here, its rendezvous at that address, and ranks 1.. are started on the other hosts with
``python -m impls.ddp_rank --rank R --world-size N`` and the same two variables.
"""
from __future__ import annotations

import atexit
import itertools
import os
import secrets
import subprocess
import sys
import tempfile
import time
import weakref
from multiprocessing.connection import Client

import numpy as np
import torch

from impls.base import ConfigError, Implementation

START_TIMEOUT = 300.0          # seconds for every rank to join (a remote one is started by hand)
MAX_DEFAULT_WORLD = 4


class RankFailed(RuntimeError):
    """A rank died or raised; the message holds the end of its error output."""


def default_world_size() -> int:
    return max(1, min(torch.get_num_threads(), MAX_DEFAULT_WORLD))


def rendezvous() -> tuple[str, int] | None:
    """``(MASTER_ADDR, MASTER_PORT)`` when both are set (ranks on other hosts), else None."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    return (addr, int(port)) if addr and port else None


class _Ranks:
    """The rank processes of one (world size, threads per rank, rendezvous), and the socket to
    rank 0. ``call`` sends one command and waits for its answer, watching that no rank died."""

    def __init__(self, world_size: int, threads: int, where: tuple[str, int] | None):
        self.world_size, self.threads = world_size, threads
        self.key = (world_size, threads, where)
        self.procs: list[subprocess.Popen] = []
        self.log = tempfile.TemporaryFile(mode="w+")      # the ranks' own stderr, quoted on failure
        self.data = None                                    # weakref to the x the ranks hold
        started = time.perf_counter()
        self.pending_drops: list[int] = []                  # instances gone since the last call
        self.busy = False                                   # a command sent and not yet answered
        self.failure = ""                                   # what ended them, if a failure did
        self._dir = tempfile.TemporaryDirectory(prefix="torch-ddp-")
        key = secrets.token_bytes(16)
        address = os.path.join(self._dir.name, "rank0.sock")
        addr, port = where or ("127.0.0.1", 0)
        self._start(0, addr, port, ["--listen", address], key.hex())
        if where is None:        # the others import torch meanwhile, and read rank 0's port on stdin
            for r in range(1, world_size):
                self._start(r, addr, -1, [], None)
        self.conn = self._connect(address, key)
        port = self._wait("port")
        for proc in self.procs[1:]:
            self._tell(proc, str(port))
        self._wait("ready")
        self.start_seconds = time.perf_counter() - started
    def _start(self, rank, addr, port, extra, key):
        cmd = [sys.executable, "-m", "impls.ddp_rank", "--rank", str(rank), "--world-size", str(self.world_size),
               "--threads", str(self.threads), "--master-addr", addr, "--master-port", str(port),
               "--parent-pid", str(os.getpid()), *extra]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.procs.append(proc)
        if key is not None:
            self._tell(proc, key)

    def _tell(self, proc, line: str) -> None:
        """One line on a rank's stdin (rank 0's key, or the others' port), which then closes."""
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.close()
        except OSError:
            pass                    # it died first: the wait that follows says so

    def _fail(self, message: str, tail: bool = True):
        """Kill the ranks and raise RankFailed(message and the end of their error output); an
        instance of these ranks that calls later is told what ended them."""
        self.close(polite=False)
        self.failure = message
        raise RankFailed(message + (self._tail() if tail else "")) from None

    def _tail(self) -> str:
        self.log.seek(0)
        lines = [ln for ln in self.log.read().splitlines() if ln.strip()]
        return ("; a rank said: " + " | ".join(lines[-3:])) if lines else ""

    def _connect(self, address, key):
        """Rank 0 listens on ``address``; connect once it does, unless it died first."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.procs[0].poll() is not None or time.monotonic() > deadline:
                why = f"exited with status {self.procs[0].returncode}" if self.procs[0].returncode is not None \
                    else f"did not listen in {START_TIMEOUT:.0f} s"
                self._fail(f"torch-ddp: rank 0 {why}")
            try:
                return Client(address, family="AF_UNIX", authkey=key)
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.05)

    def _wait(self, want: str, timeout: float = START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.2):
            dead = [(r, p.returncode) for r, p in enumerate(self.procs) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = (f"rank {dead[0][0]} exited with status {dead[0][1]}" if dead
                       else f"no answer in {timeout:.0f} s (is every remote rank started?)")
                self._fail(f"torch-ddp: {why}")
        try:
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            self._fail("torch-ddp: rank 0 went away")
        if kind == "error":
            # a peer that died shows in rank 0 as gloo's "connection closed": name the one that died
            deadline = time.monotonic() + 2.0
            while not (dead := [(r, p.returncode) for r, p in enumerate(self.procs[1:], 1) if p.poll() is not None]) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            first = f"rank {dead[0][0]} exited with status {dead[0][1]}, and then " if dead else ""
            self._fail(f"torch-ddp: {first}rank 0 failed: {value.strip().splitlines()[-1][:300]}", tail=False)
        if kind not in (want, "ok"):
            self._fail(f"torch-ddp: rank 0 answered {kind!r}, not {want!r}", tail=False)
        return value

    def call(self, *msg):
        if self.closed:
            raise RankFailed("torch-ddp: the ranks were closed" + (f" after a failure ({self.failure})"
                                                                   if self.failure else ""))
        while self.pending_drops:
            self._send_and_wait(("drop", self.pending_drops.pop()))
        return self._send_and_wait(msg)

    def _send_and_wait(self, msg):
        self.busy = True                # until the answer: a Ctrl-C meanwhile leaves the ranks mid-command
        try:
            self.conn.send(msg)
        except OSError:
            self._fail("torch-ddp: rank 0 went away")
        answer = self._wait("ok", timeout=float("inf"))
        self.busy = False
        return answer

    def ensure_data(self, x, y) -> None:
        if self.data is None or self.data() is not x:
            self.call("data", np.ascontiguousarray(x), np.asarray(y, dtype=np.int64))
            self.data = weakref.ref(x)

    @property
    def closed(self) -> bool:
        return not self.procs or all(p.poll() is not None for p in self.procs)

    def close(self, polite: bool = True) -> None:
        """Stop the ranks: ask rank 0 (which tells the rest), then kill what is left; after a
        failure (``polite=False``), or with a command unanswered (Ctrl-C in an epoch), kill them at once."""
        conn = getattr(self, "conn", None)
        polite = polite and not self.busy
        if polite and conn is not None and not self.closed:
            try:
                conn.send(("stop",))
                conn.poll(5)
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5 if polite else 0)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if _POOLS.get(self.key) is self:
            del _POOLS[self.key]
        self._dir.cleanup()


_POOLS: dict[tuple, _Ranks] = {}
_IDS = itertools.count(1)


def shutdown() -> None:
    """Stop every rank this process started (also run at exit)."""
    for ranks in list(_POOLS.values()):
        ranks.close()
    _POOLS.clear()


atexit.register(shutdown)


class TorchDDP(Implementation):
    name = "torch-ddp"
    description = "torch DistributedDataParallel, gloo, one process per rank, the batch split across ranks"
    device = "cpu"
    takes_world_size = True

    def __init__(self, spec, params, *, world_size: int | None = None, **config):
        super().__init__(spec, params, **config)
        world_size = default_world_size() if world_size is None else int(world_size)
        if world_size < 1:
            raise ConfigError(f"torch-ddp: world size must be a positive integer, got {world_size}")
        self.world_size = world_size
        self.threads = max(1, torch.get_num_threads() // world_size)
        where = rendezvous()
        key = (world_size, self.threads, where)
        if key not in _POOLS or _POOLS[key].closed:
            _POOLS[key] = _Ranks(world_size, self.threads, where)
        self._ranks = _POOLS[key]
        self._id = next(_IDS)
        options = dict(dtype=self.dtype.name, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                       momentum=self.momentum, betas=self.betas, eps=self.eps)
        self._kernel = self._ranks.call("new", self._id, spec.activation,
                         [(np.asarray(W, dtype=self.dtype), np.asarray(b, dtype=self.dtype)) for W, b in params],
                         options)
        self.last_epoch_stats: list[dict] = []          # per rank: step and all-reduce seconds
        weakref.finalize(self, _drop, self._ranks, self._id)

    def train_epoch(self, x, y, order):
        self._ranks.ensure_data(x, y)
        loss, self.last_epoch_stats = self._ranks.call("epoch", self._id, np.asarray(order, dtype=np.int64))
        return loss

    def predict_proba(self, x):
        return self._ranks.call("predict", self._id, np.asarray(x, dtype=self.dtype))

    def get_params(self):
        return self._ranks.call("params", self._id)

    def rank_pids(self) -> list[int]:
        return [p.pid for p in self._ranks.procs]

    def details(self):
        """``ranks_start_seconds`` (a metric): what starting this world's ranks cost, once per
        process, outside every timed epoch; the rest are params."""
        where = rendezvous()
        return {"world_size": str(self.world_size), "backend": "gloo", "threads_per_rank": str(self.threads),
                "optimizer_kernel": self._kernel, "ranks_start_seconds": round(self._ranks.start_seconds, 3),
                "rendezvous": f"{where[0]}:{where[1]}" if where else "local"}


def _drop(ranks: _Ranks, mid: int) -> None:
    """An instance is gone: its replicas go with the next command (not now: a garbage collection
    may run this in the middle of another command's exchange)."""
    ranks.pending_drops.append(mid)
