"""GPU tests: torch-cuda and torch-cuda-graph on a real CUDA device (``pytest -m gpu``; what
``python -m benchmarks gpu-check`` runs first). Without a GPU every test here skips, with the
reason the registry gives.

- parity: one epoch of 1,000 real samples against the float64 reference, on hw1-q3's network,
  held to ``impls.PARITY_TOLERANCE`` (float64 1e-9, float32 1e-3), with a short last batch;
- graph replay equals eager, over two epochs, per batch and in graphs of several steps;
- the batch loop never waits for the GPU: ``torch.cuda.set_sync_debug_mode("error")`` around it,
  and a check that the mode is live (a planted ``.item()`` raises);
- the fused optimizer is the one that ran; the TF32 switch changes the numbers;
- the GPU measurements (peak GEMM, peak memory, NVML inventory and energy) answer.
"""
import numpy as np
import pytest

import impls
from impls.oracle import train_epoch as reference_train

pytestmark = pytest.mark.gpu
CUDA = ("torch-cuda", "torch-cuda-graph")
SPEC = impls.NetSpec((784, 256, 128, 64, 10), "relu")      # hw1-q3's network
N = 1000


def cuda_class(name="torch-cuda"):
    reason = impls.available_reason(name)
    if reason:
        pytest.skip(f"{name}: {reason}")
    return impls.get(name)


@pytest.fixture(scope="module")
def problem(small):
    x, y = small
    order = np.random.default_rng(3).permutation(N)
    return x, y, order, impls.init_params(SPEC, seed=5, scheme="he")


@pytest.mark.parametrize("dtype", impls.DTYPES)
@pytest.mark.parametrize("batch", [1, 32, 256])        # 1,000 = 3 x 256 + 232: a short last batch
@pytest.mark.parametrize("opt", [("adam", 0.0, 1e-3), ("sgd", 0.9, 0.02)])
@pytest.mark.parametrize("name", CUDA)
def test_parity_against_the_float64_reference(name, opt, batch, dtype, problem):
    cls = cuda_class(name)
    optimizer, momentum, lr = opt
    x, y, order, params = problem
    want, want_loss = reference_train(SPEC, params, x, y, order, lr=lr, batch_size=batch,
                                      optimizer=optimizer, momentum=momentum)
    net = cls(SPEC, params, lr=lr, batch_size=batch, dtype=dtype, optimizer=optimizer, momentum=momentum)
    loss = net.train_epoch(x.astype(dtype), y, order)
    err = impls.parity_error(net.get_params(), want)
    tol = impls.PARITY_TOLERANCE[dtype]
    print(f"{name} {optimizer} b{batch} {dtype}: parity {err:.2e}, loss {abs(loss - want_loss):.2e}")
    assert err <= tol
    assert abs(loss - want_loss) <= tol * max(1.0, abs(want_loss))
    moved = max(impls.relative_error(W0, W) for (W0, _), (W, _) in zip(params, want))
    assert moved > 10 * tol          # training moved the weights well past the tolerance


@pytest.mark.parametrize("dtype", impls.DTYPES)
@pytest.mark.parametrize("steps_per_graph", [1, 256])    # per-batch replay, or graphs of several steps
@pytest.mark.parametrize("batch", [24, 256])            # 42 batches (graphs of 32, 8, 2), or 4 (one of 4)
def test_graph_replay_equals_eager(batch, steps_per_graph, dtype, problem, monkeypatch):
    eager_cls, graph_cls = cuda_class("torch-cuda"), cuda_class("torch-cuda-graph")
    monkeypatch.setattr(graph_cls, "steps_per_graph", steps_per_graph)
    x, y, order, params = problem
    xd = x.astype(dtype)
    nets = [cls(SPEC, params, lr=1e-3, batch_size=batch, dtype=dtype, optimizer="adam") for cls in (eager_cls, graph_cls)]
    nets[1].warm_up(xd, y)
    assert nets[1]._graph is not None, "no graph was captured"
    assert nets[1].details()["step"].startswith("CUDA graph")
    for epoch in range(2):                               # the second epoch replays the same graph
        losses = [net.train_epoch(xd, y, np.roll(order, epoch)) for net in nets]
    diff = impls.parity_error(nets[1].get_params(), nets[0].get_params())
    print(f"graph vs eager, {dtype}: max relative difference {diff:.2e}, losses {losses}")
    assert diff <= (1e-12 if dtype == "float64" else 1e-6)
    assert abs(losses[0] - losses[1]) <= (1e-12 if dtype == "float64" else 1e-6) * abs(losses[0])


@pytest.mark.parametrize("name,steps_per_graph", [("torch-cuda", None), ("torch-cuda-graph", 1),
                                                  ("torch-cuda-graph", 256)])
def test_no_host_sync_inside_the_batch_loop(name, steps_per_graph, problem, monkeypatch):
    import torch
    cls = cuda_class(name)
    if steps_per_graph:
        monkeypatch.setattr(cls, "steps_per_graph", steps_per_graph)
    x, y, order, params = problem
    xf = x.astype("float32")
    net = cls(SPEC, params, lr=1e-3, batch_size=64, dtype="float32", optimizer="adam")
    net.warm_up(xf, y)
    net.train_epoch(xf, y, order)                # optimizer state and kernels exist already
    xt, yt = net._to_device(xf, y)
    order_t = net._order_to_device(order)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = net._epoch_loop(xt, yt, order_t)   # the loop train_epoch times, as it runs there
        with pytest.raises(RuntimeError):          # the check is live: a planted sync is caught
            torch.ones(1, device="cuda").sum().item()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert np.isfinite(float(total))


@pytest.mark.parametrize("dtype", impls.DTYPES)
@pytest.mark.parametrize("optimizer", impls.OPTIMIZERS)
@pytest.mark.parametrize("name", CUDA)
def test_fused_optimizer_is_the_one_that_ran(name, optimizer, dtype):
    cls = cuda_class(name)
    net = cls(SPEC, impls.init_params(SPEC, 0, "he"), lr=1e-3, batch_size=32, dtype=dtype, optimizer=optimizer)
    assert net.details()["optimizer_kernel"] == "fused"
    assert net._opt.defaults["fused"] is True


def test_tf32_changes_float32_results_and_is_recorded(problem):
    cls = cuda_class("torch-cuda")
    x, y, order, params = problem
    got = {}
    for tf32 in (False, True):
        net = cls(SPEC, params, lr=1e-3, batch_size=32, dtype="float32", optimizer="adam", tf32=tf32)
        net.train_epoch(x.astype("float32"), y, order)
        got[tf32] = net.get_params()
        assert net.details()["tf32"] == ("on" if tf32 else "off")
    want, _ = reference_train(SPEC, params, x, y, order, lr=1e-3, batch_size=32, optimizer="adam")
    ieee, tf32 = impls.parity_error(got[False], want), impls.parity_error(got[True], want)
    print(f"float32 parity: TF32 off {ieee:.2e}, on {tf32:.2e}")
    assert ieee <= impls.PARITY_TOLERANCE["float32"]
    assert impls.parity_error(got[True], got[False]) > 0, "TF32 on changed nothing: the switch is not reaching cuBLAS"


def test_gpu_measurements_answer():
    import torch
    cuda_class()
    from benchmarks import gpu
    peaks = gpu.peak_gemm(n=2048, rounds=2, round_seconds=0.01)
    print("peak GEMM GFLOP/s:", peaks)
    assert set(peaks) == set(gpu.MODES) and all(v > 100 for v in peaks.values())
    assert peaks["bfloat16"] > peaks["float32"]          # tensor cores: bf16 well above plain float32
    gpu.reset_peak_memory()
    block = torch.empty(64 * 2 ** 20, dtype=torch.uint8, device="cuda")
    assert gpu.peak_memory_bytes() >= block.numel()
    inv = gpu.inventory()
    print("inventory:", inv)
    assert inv["gpu_cuda_runtime"] == torch.version.cuda
    assert torch.cuda.get_device_name(0) in inv["gpu"] or inv["gpu"] in torch.cuda.get_device_name(0)
    meter = gpu.EnergyMeter()
    print("energy counter:", meter.reason or f"{meter.millijoules()} mJ")
    assert meter.reason or meter.millijoules() > 0
