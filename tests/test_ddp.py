"""torch-ddp (impls/torch_ddp.py): N ranks at a global batch equal one process at that batch,
its ranks never outlive the process that holds them, and a rank on "another host" (a process
started by hand at a MASTER_ADDR/MASTER_PORT rendezvous) trains the same weights.

The registry-wide conformance grid (tests/test_conformance.py) runs torch-ddp at its default
world size against the float64 oracle; this file pins world sizes 1 and 2 against torch-cpu.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import impls
from benchmarks import runner
from benchmarks.config import PRESETS

pytestmark = pytest.mark.integration       # rank processes start in seconds: not the fast tier

SPEC = impls.NetSpec((784, 48, 24, 10), "relu")
OPTIMIZERS = {"sgd": ("sgd", 0.0, 0.05), "momentum": ("sgd", 0.9, 0.02), "adam": ("adam", 0.0, 1e-3)}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread in this process (tests/helpers.py ``one_torch_thread``): world size 1's
    rank gets one thread too, as world size 2's ranks get one each."""
    from tests.helpers import one_torch_thread
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def problem(small):
    x, y = small
    return x, y, np.random.default_rng(3).permutation(len(x)), impls.init_params(SPEC, seed=5, scheme="he")


def train(name, problem, dtype, opt, batch, **options):
    x, y, order, params = problem
    optimizer, momentum, lr = OPTIMIZERS[opt]
    net = impls.get(name)(SPEC, params, lr=lr, batch_size=batch, dtype=dtype, optimizer=optimizer,
                          momentum=momentum, **options)
    loss = net.train_epoch(x.astype(dtype), y, order)
    return net, loss


CASES = [(opt, 7) for opt in OPTIMIZERS] + [("sgd", 1)]     # batch 32: the conformance grid's


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("dtype", impls.DTYPES)
@pytest.mark.parametrize("opt,batch", CASES, ids=[f"{o}-b{b}" for o, b in CASES])
def test_an_epoch_on_n_ranks_equals_torch_cpu_at_the_same_global_batch(problem, world_size, dtype, opt, batch):
    """Batch 7 splits 4 + 3; batch 1 on two ranks leaves one rank without a sample in every
    step: the scaled mean keeps both exact (the batch size stays the global one)."""
    ddp, ddp_loss = train("torch-ddp", problem, dtype, opt, batch, world_size=world_size)
    cpu, cpu_loss = train("torch-cpu", problem, dtype, opt, batch)
    err = impls.parity_error(ddp.get_params(), cpu.get_params())
    assert err <= impls.PARITY_TOLERANCE[dtype], f"parameter error {err:.2e} against torch-cpu"
    assert abs(ddp_loss - cpu_loss) <= impls.PARITY_TOLERANCE[dtype] * max(1.0, cpu_loss)
    moved = impls.parity_error(cpu.get_params(), problem[3])
    assert moved > 100 * impls.PARITY_TOLERANCE[dtype], "training moved the weights: the check can fail"
    assert ddp.details()["world_size"] == str(world_size)
    x = problem[0][:40].astype(dtype)
    assert impls.relative_error(ddp.predict_proba(x), cpu.predict_proba(x)) <= 10 * impls.PARITY_TOLERANCE[dtype]


@pytest.mark.parametrize("world_size", [1, 2])
def test_one_float64_step_passes_the_harness_parity_check(fashion, world_size):
    config = PRESETS["hw1-q3"].replace(impl="torch-ddp", dtype="float64", train_limit=2048, world_size=world_size)
    prepared = runner.prepare(config, fashion)
    assert prepared.parity_ok, prepared.parity_max_error
    assert prepared.details["world_size"] == str(world_size)


def test_hw1_q3_after_one_epoch_has_torch_cpu_accuracy_to_four_decimals(fashion):
    """In float64 at world size 2, and in float32 at world size 1: the same accuracy to 4
    decimals. In float32 at world size 2 each rank sums half the batch and the all-reduce adds
    the halves, a different rounding of the same sum; 235 Adam steps carry it to the accuracy
    (seen on an AMD EPYC: 0.8388 against 0.8433, docs/performance.md), so there it is held to
    the same schedule's spread instead."""
    def accuracy(name, dtype, world_size=None):
        config = PRESETS["hw1-q3"].replace(impl=name, epochs=1, dtype=dtype, world_size=world_size)
        return runner.train(runner.prepare(config, fashion), fashion).epochs[-1].test_accuracy
    cpu64, cpu32 = accuracy("torch-cpu", "float64"), accuracy("torch-cpu", "float32")
    assert round(accuracy("torch-ddp", "float64", 2), 4) == round(cpu64, 4) and cpu64 > 0.8
    assert round(accuracy("torch-ddp", "float32", 1), 4) == round(cpu32, 4) and cpu32 > 0.8
    assert abs(accuracy("torch-ddp", "float32", 2) - cpu32) < 0.01


def test_world_size_is_refused_by_other_implementations_and_must_be_positive(problem):
    x, y, order, params = problem
    with pytest.raises(impls.ConfigError, match="world size applies to torch-ddp, not to torch-cpu"):
        impls.get("torch-cpu")(SPEC, params, lr=0.1, world_size=2)
    with pytest.raises(impls.ConfigError, match="world size must be a positive integer"):
        impls.get("torch-ddp")(SPEC, params, lr=0.1, world_size=0)


def test_run_trains_with_the_world_size_asked_and_refuses_it_elsewhere(tmp_path):
    from tests.helpers import run_cli
    out = tmp_path / "run.json"
    proc = run_cli("run", "--impl", "torch-ddp", "--world-size", "2", "--preset", "hw1-q3", "--epochs", "1",
                   "--train-limit", "2048", "--test-limit", "500", "--output-json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "torch-ddp: hw1-q3" in proc.stdout and "Traceback" not in proc.stderr
    proc = run_cli("run", "--impl", "torch-cpu", "--world-size", "2")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --world-size applies to torch-ddp only, not to torch-cpu"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")    # a zombie holds nothing
    except FileNotFoundError:
        return True


HOLDER = """
import sys, time, numpy as np, torch, impls
torch.set_num_threads(2)
spec = impls.NetSpec((784, 16, 10), "sigmoid")
net = impls.get("torch-ddp")(spec, impls.init_params(spec, 0), lr=0.1, batch_size=8, world_size=2)
x = np.random.default_rng(0).random((64, 784)); y = np.arange(64) % 10
net.train_epoch(x, y, np.arange(64))
print(*net.rank_pids(), flush=True)
time.sleep(600)
"""


def test_a_killed_worker_leaves_no_rank_process():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in holder.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids), pids
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 15
        while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(p) for p in pids), f"rank processes left: {[p for p in pids if not _gone(p)]}"
    finally:
        holder.kill()
        holder.wait()


def test_a_rank_that_dies_mid_session_is_a_clear_error_not_a_hang(problem):
    from impls import torch_ddp
    x, y, order, params = problem
    net = impls.get("torch-ddp")(SPEC, params, lr=0.05, batch_size=16, world_size=2)
    net.train_epoch(x, y, order[:64])
    os.kill(net.rank_pids()[1], signal.SIGKILL)
    with pytest.raises(torch_ddp.RankFailed, match="torch-ddp: rank"):
        net.train_epoch(x, y, order)
    again = impls.get("torch-ddp")(SPEC, params, lr=0.05, batch_size=16, world_size=2)   # fresh ranks
    assert np.isfinite(again.train_epoch(x, y, order[:64]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_started_by_hand_at_a_rendezvous_trains_the_same_weights(problem, monkeypatch):
    """Two "hosts" on 127.0.0.1: rank 0 under the implementation, rank 1 started as a user would
    start it on another machine, with MASTER_ADDR and MASTER_PORT."""
    from impls import torch_ddp
    local, _ = train("torch-ddp", problem, "float64", "adam", 32, world_size=2)
    want = local.get_params()
    port = _free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    remote = subprocess.Popen([sys.executable, "-m", "impls.ddp_rank", "--rank", "1", "--world-size", "2"],
                              env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(port))
        net, _ = train("torch-ddp", problem, "float64", "adam", 32, world_size=2)
        assert net.details()["rendezvous"] == f"127.0.0.1:{port}"
        assert len(net.rank_pids()) == 1                    # rank 1 is not this host's to start
        got = net.get_params()
        assert all(np.array_equal(g, w) for gp, wp in zip(got, want) for g, w in zip(gp, wp))
        torch_ddp.shutdown()
        assert remote.wait(30) == 0                          # told to stop, it stopped
    finally:
        remote.kill()
        remote.wait()
