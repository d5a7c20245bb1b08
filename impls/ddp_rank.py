"""One rank of torch-ddp: a process that holds a replica and trains its share of every batch.

impls/torch_ddp.py starts the ranks on this host (``python -m impls.ddp_rank``); a rank on
another host is started by hand with the same command, as torchrun would (README.md, "Across
processes"). Rank 0 alone talks to the implementation, over a ``multiprocessing.connection``
socket, and broadcasts each command that all ranks must run to the others through the process
group itself; so a rank on another host needs only the rendezvous address. The training data
reaches every rank the same way, broadcast once per training set.

Commands, as tuples: ``("data", n, dtype)`` then two broadcast tensors; ``("new", id,
activation, params, options)`` answered with the optimizer kernel; ``("epoch", id, order)`` answered ``(loss, stats)``; ``("drop",
id)``; ``("stop",)``. Rank 0 answers ``("params", id)`` and ``("predict", id, x)`` alone.
A rank started by the implementation dies with it (``PR_SET_PDEATHSIG``), whatever kills it.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import datetime
import os
import signal
import sys
import time
import traceback

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from impls.torch_impl import make_optimizer

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# a rank may wait this long for the next command (an interactive user's pause), not for ever
COMMAND_TIMEOUT = datetime.timedelta(hours=12)
COLLECTIVE = ("data", "new", "epoch", "drop", "stop")


class Replica(torch.nn.Module):
    """The network as the other torch implementations compute it (impls/torch_impl.py)."""

    def __init__(self, activation, params, tdtype):
        super().__init__()
        self.activation = activation
        self.weights = torch.nn.ParameterList()
        for W, b in params:
            self.weights.append(torch.nn.Parameter(torch.tensor(W, dtype=tdtype)))
            self.weights.append(torch.nn.Parameter(torch.tensor(b, dtype=tdtype)))

    def forward(self, h):
        L = len(self.weights) // 2
        for k in range(L):
            h = torch.addmm(self.weights[2 * k + 1], h, self.weights[2 * k])
            if k < L - 1:
                h = torch.relu(h) if self.activation == "relu" else torch.sigmoid(h)
        return h


class Model:
    """One instance's replica on this rank: the DDP wrapper, its optimizer, and the timings of
    the last epoch (each step's seconds; each gradient bucket's all-reduce seconds)."""

    def __init__(self, activation, params, options):
        tdtype = _TORCH_DTYPES[options["dtype"]]
        self.net = Replica(activation, params, tdtype)
        # DDP broadcasts rank 0's parameters at construction; every rank starts from the same init
        # anyway, so this only proves it
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.net)
        self.ddp.register_comm_hook(self, _timed_mean_allreduce)
        self.batch_size = options["batch_size"]
        hyper = ({"lr": options["lr"], "betas": options["betas"], "eps": options["eps"]}
                 if options["optimizer"] == "adam" else {"lr": options["lr"], "momentum": options["momentum"]})
        # torch-cpu's kernel choice (fused where torch offers it), so 1-rank DDP against
        # torch-cpu measures DDP alone
        self.opt, self.kernel = make_optimizer(list(self.net.parameters()), options["optimizer"], hyper,
                                               tdtype, "cpu")
        self.allreduce_seconds: list[float] = []

    def epoch(self, x, y, order):
        rank, world = dist.get_rank(), dist.get_world_size()
        loss_sum = torch.zeros((), dtype=torch.float64)
        steps = []
        self.allreduce_seconds = []
        for idx in torch.split(order, self.batch_size):
            t0 = time.perf_counter()
            mine = torch.tensor_split(idx, world)[rank]      # contiguous, sizes differ by at most one
            loss = F.cross_entropy(self.ddp(x[mine]), y[mine], reduction="sum")
            self.opt.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients; scaled by world/n, the average is the gradient
            # of the whole batch's mean loss, however unevenly the batch was split
            (loss * (world / len(idx))).backward()
            self.opt.step()
            steps.append(time.perf_counter() - t0)
            loss_sum += loss.detach().double()
        dist.all_reduce(loss_sum)
        return float(loss_sum) / max(len(order), 1), {
            "rank": rank, "step_seconds": steps, "allreduce_seconds": self.allreduce_seconds}


def _timed_mean_allreduce(model: Model, bucket):
    """DDP's default hook (divide by the world size, all-reduce with a sum), timed from launch to
    completion."""
    t0 = time.perf_counter()
    buffer = bucket.buffer().div_(dist.get_world_size())
    future = dist.all_reduce(buffer, async_op=True).get_future()

    def done(fut):
        model.allreduce_seconds.append(time.perf_counter() - t0)
        return fut.value()[0]
    return future.then(done)


def _broadcast(obj):
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def serve(conn, rank: int) -> None:
    """Run commands until ``stop``: rank 0 reads them from ``conn``, the others from rank 0."""
    models: dict[int, Model] = {}
    x = y = None
    while True:
        if rank == 0:
            msg = conn.recv()
            if msg[0] not in COLLECTIVE:
                conn.send(("ok", _local(models[msg[1]], msg)))
                continue
            _broadcast(msg[:1] + (None,) * (len(msg) - 1) if msg[0] == "data" else msg)
        else:
            msg = _broadcast(None)
        kind = msg[0]
        if kind == "data":
            if rank == 0:
                _, xa, ya = msg
                x, y = torch.from_numpy(np.ascontiguousarray(xa)), torch.from_numpy(np.asarray(ya, np.int64))
                header = [tuple(x.shape), str(x.dtype)]
            header = _broadcast(header if rank == 0 else None)
            if rank != 0:
                x = torch.empty(header[0], dtype=getattr(torch, header[1].split(".")[1]))
                y = torch.empty(header[0][0], dtype=torch.int64)
            dist.broadcast(x, src=0)
            dist.broadcast(y, src=0)
            reply = None
        elif kind == "new":
            _, mid, activation, params, options = msg
            models[mid] = Model(activation, params, options)
            reply = models[mid].kernel
        elif kind == "epoch":
            _, mid, order = msg
            loss, stats = models[mid].epoch(x, y, torch.as_tensor(order, dtype=torch.int64))
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, stats)
            reply = (loss, gathered)
        elif kind == "drop":
            models.pop(msg[1], None)
            reply = None
        else:                                   # stop
            if rank == 0:
                conn.send(("ok", None))
            return
        if rank == 0:
            conn.send(("ok", reply))


def _local(model: Model, msg):
    if msg[0] == "params":
        p = [t.detach().numpy().copy() for t in model.net.parameters()]
        return list(zip(p[0::2], p[1::2]))
    with torch.no_grad():                       # predict
        x = torch.as_tensor(np.asarray(msg[2]), dtype=next(model.net.parameters()).dtype)
        return torch.softmax(model.net(x), dim=1).numpy()


def _stop(store, rank: int, world_size: int) -> None:
    """Leave the group in an order in which no rank outlives the store it talks to: each rank
    destroys its process group, the others then say so through the store, and rank 0, which
    serves the store, waits for them (30 s at most) before it goes. A rank once ended with
    SIGABRT ("terminate called without an active exception") after a stop, in a loaded test
    run: torch's C++ threads can abort when their peer or store disappears under them."""
    dist.destroy_process_group()
    if rank != 0:
        store.add("bpb/stopped", 1)
        return
    deadline = time.monotonic() + 30
    while store.add("bpb/stopped", 0) < world_size - 1 and time.monotonic() < deadline:
        time.sleep(0.01)


def _die_with(parent_pid: int) -> None:
    """SIGKILL this rank when the process that started it ends, however it ends."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)               # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:              # it ended before the line above
        os._exit(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m impls.ddp_rank",
                                 description="One rank of torch-ddp (impls/torch_ddp.py).")
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world-size", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--master-addr", default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
    ap.add_argument("--master-port", type=int, default=int(os.environ.get("MASTER_PORT", "0")),
                    help="the rendezvous port (-1: read it on stdin, from the implementation)")
    ap.add_argument("--listen", help="rank 0: the socket to serve the implementation on (its key on stdin)")
    ap.add_argument("--parent-pid", type=int, help="a rank started by the implementation: die with it")
    args = ap.parse_args(argv)
    if args.parent_pid:
        _die_with(args.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the implementation's to handle
    torch.set_num_threads(max(1, args.threads))
    conn = None
    try:
        if args.master_port < 0:
            args.master_port = int(sys.stdin.readline())
        if args.rank == 0:
            from multiprocessing.connection import Listener
            with Listener(args.listen, family="AF_UNIX", authkey=bytes.fromhex(sys.stdin.readline().strip())) as ls:
                conn = ls.accept()
        # rank 0 binds the store (port 0: any free one, reported to the implementation, which
        # then starts the others) without waiting for the ranks that are not started yet
        store = dist.TCPStore(args.master_addr, args.master_port, args.world_size, is_master=args.rank == 0,
                              timeout=datetime.timedelta(seconds=300), wait_for_workers=False)
        if conn is not None:
            conn.send(("port", store.port))     # the implementation starts the other ranks now
        dist.init_process_group("gloo", store=store, rank=args.rank, world_size=args.world_size,
                                timeout=COMMAND_TIMEOUT)
        if conn is not None:
            conn.send(("ready", None))
        serve(conn, args.rank)
        _stop(store, args.rank, args.world_size)
        return 0
    except (EOFError, ConnectionError, BrokenPipeError):
        return 1                                # the implementation or a peer went away
    except Exception:
        if conn is not None:
            try:
                conn.send(("error", traceback.format_exc()))
            except OSError:
                pass
        else:
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    code = main()
    # without the interpreter's teardown, in which torch's C++ objects (the store's client, gloo's
    # threads) are destroyed after Python has started to go (benchmarks/leave.py does the same)
    atexit._run_exitfuncs()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)
