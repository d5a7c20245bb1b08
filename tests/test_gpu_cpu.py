"""Everything of the GPU work that can be checked without a GPU (tests/test_gpu.py holds the
rest): the CUDA implementations' own logic run on the CPU against the float64 oracle, the
selection and skip reasons, the peak probe's arithmetic (the GPU inventory and energy through
NVML are in tests/test_nvml.py), gpu-check's no-GPU exit, and the GPU table from a fixture frame."""

import numpy as np
import pandas as pd
import pytest

import impls
from benchmarks import gpu
from impls.oracle import train_epoch as reference_train
from impls.torch_cuda import TorchCUDA, TorchCUDAGraph
from tests.helpers import run_cli
from tests.tiers import grid

SPEC = impls.NetSpec((784, 48, 24, 10), "relu")
OPTS = {"sgd": ("sgd", 0.0, 0.05), "momentum": ("sgd", 0.9, 0.02), "adam": ("adam", 0.0, 1e-3)}


class EagerOnCPU(TorchCUDA):
    """torch-cuda's own epoch loop and optimizer choice, on the CPU."""
    device = "cpu"

    def sync(self):
        pass


class GraphStepOnCPU(TorchCUDAGraph):
    """torch-cuda-graph's step, batch table, padding and warm-up-then-restore, run eagerly on
    the CPU (``capture = False``): everything but the capture itself."""
    device = "cpu"
    capture = False

    def sync(self):
        pass


class ForgetsOptimizerState(GraphStepOnCPU):
    """A planted fault: the warm-up's effect on the optimizer state is not undone."""

    def _restore(self, saved):
        super()._restore((saved[0], {}))
        for p in self._params:
            for k, v in self._opt.state[p].items():
                if k != "step" and hasattr(v, "fill_"):
                    v.fill_(1e-3)


@pytest.fixture(scope="module")
def problem(small):
    x, y = small
    return x, y, np.random.default_rng(7).permutation(len(x)), impls.init_params(SPEC, seed=11, scheme="xavier")


# 1,000 % 32 = 8 and % 24 = 16: short last batches; the fast tier keeps float64 at batch 24 (tests/tiers.py)
@pytest.mark.parametrize(*grid(lambda cls, opt, batch, dtype: batch == 24 and dtype == "float64",
                               cls={"eager": EagerOnCPU, "graph-step": GraphStepOnCPU}, opt=list(OPTS), batch=[1, 32, 24], dtype=impls.DTYPES))
def test_cuda_implementations_logic_on_the_cpu_matches_the_reference(cls, opt, batch, dtype, problem):
    x, y, order, params = problem
    optimizer, momentum, lr = OPTS[opt]
    want, want_loss = reference_train(SPEC, params, x, y, order, lr=lr, batch_size=batch,
                                      optimizer=optimizer, momentum=momentum)
    net = cls(SPEC, params, lr=lr, batch_size=batch, dtype=dtype, optimizer=optimizer, momentum=momentum)
    net.warm_up(x.astype(dtype), y)              # graph step: three warm-up steps, then undone
    loss = net.train_epoch(x.astype(dtype), y, order)
    tol = impls.PARITY_TOLERANCE[dtype]
    assert impls.parity_error(net.get_params(), want) <= tol
    assert abs(loss - want_loss) <= tol * max(1.0, abs(want_loss))
    assert net.details()["optimizer_kernel"] == "fused"


def test_graph_step_equals_eager_step_on_the_cpu(problem):
    x, y, order, params = problem
    nets = [cls(SPEC, params, lr=1e-3, batch_size=32, dtype="float32", optimizer="adam")
            for cls in (EagerOnCPU, GraphStepOnCPU)]
    for epoch in range(2):
        losses = [net.train_epoch(x.astype("float32"), y, np.roll(order, epoch)) for net in nets]
    assert impls.parity_error(nets[1].get_params(), nets[0].get_params()) <= 1e-6
    assert abs(losses[0] - losses[1]) <= 1e-6 * losses[0]


@pytest.mark.parametrize("steps_per_graph", [1, 4, 256])
def test_programs_of_several_steps_cover_every_batch_once_in_order(steps_per_graph, problem, monkeypatch):
    """1,000 samples at batch 24 are 42 batches: 42 programs of 1 step, 10 of 4 and one of 2,
    or one of 32, 8 and 2; each batch trained once, in order, against the float64 reference."""
    x, y, order, params = problem
    monkeypatch.setattr(GraphStepOnCPU, "steps_per_graph", steps_per_graph)
    net = GraphStepOnCPU(SPEC, params, lr=1e-3, batch_size=24, dtype="float64", optimizer="adam")
    net.warm_up(x, y)
    assert sorted(net._programs) == [2 ** i for i in range(steps_per_graph.bit_length())]
    runs = []
    for steps, (table, run, graph) in list(net._programs.items()):
        net._programs[steps] = (table, lambda s=steps, r=run: (runs.append(s), r()), graph)
    loss = net.train_epoch(x, y, order)
    assert sum(runs) == 42 and runs == sorted(runs, reverse=True)
    want, want_loss = reference_train(SPEC, params, x, y, order, lr=1e-3, batch_size=24, optimizer="adam")
    assert impls.parity_error(net.get_params(), want) <= impls.PARITY_TOLERANCE["float64"]
    assert abs(loss - want_loss) <= 1e-9 * abs(want_loss)


def test_steps_per_graph_must_be_a_power_of_two(monkeypatch):
    monkeypatch.setattr(GraphStepOnCPU, "steps_per_graph", 6)
    with pytest.raises(ValueError, match="power of two"):
        GraphStepOnCPU(SPEC, impls.init_params(SPEC, 0), lr=0.1, batch_size=8)


def test_a_warm_up_left_in_the_optimizer_state_is_caught(problem):
    x, y, order, params = problem
    want, _ = reference_train(SPEC, params, x, y, order, lr=1e-3, batch_size=32, optimizer="adam")
    net = ForgetsOptimizerState(SPEC, params, lr=1e-3, batch_size=32, dtype="float64", optimizer="adam")
    net.train_epoch(x, y, order)
    assert impls.parity_error(net.get_params(), want) > 1e3 * impls.PARITY_TOLERANCE["float64"]


def test_batch_table_pads_the_short_last_batch():
    net = GraphStepOnCPU(impls.NetSpec((4, 3, 2)), impls.init_params(impls.NetSpec((4, 3, 2)), 0), lr=0.1,
                         batch_size=4)
    table = net._order_to_device(np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]))
    assert table.tolist() == [[9, 8, 7, 6, 4], [5, 4, 3, 2, 4], [1, 0, 0, 0, 2]]


def test_fused_refused_falls_back_to_foreach(monkeypatch):
    import torch
    real = torch.optim.Adam

    class NoFused(real):
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
            super().__init__(params, **kw)
    monkeypatch.setattr(torch.optim, "Adam", NoFused)
    net = EagerOnCPU(SPEC, impls.init_params(SPEC, 0), lr=1e-3, batch_size=8, dtype="float32", optimizer="adam")
    assert net.details()["optimizer_kernel"].startswith("foreach (fused refused: `fused=True` requires")
    assert net._opt.defaults["foreach"] is True


def test_tf32_is_an_explicit_float32_cuda_option():
    params = impls.init_params(SPEC, 0)
    net = EagerOnCPU(SPEC, params, lr=0.1, batch_size=8, dtype="float32", tf32=True)
    assert net.details()["tf32"] == "on"
    assert EagerOnCPU(SPEC, params, lr=0.1, batch_size=8, dtype="float32").details()["tf32"] == "off"
    with pytest.raises(impls.ConfigError, match="tf32 applies to float32"):
        EagerOnCPU(SPEC, params, lr=0.1, batch_size=8, dtype="float64", tf32=True)
    with pytest.raises(impls.ConfigError, match="not to torch-cpu"):
        impls.get("torch-cpu")(SPEC, params, lr=0.1, batch_size=8, dtype="float32", tf32=True)
    from benchmarks.config import PRESETS
    from benchmarks.runner import impl_kwargs
    assert impl_kwargs(PRESETS["hw1-q3"])["tf32"] is False      # and so it is in every run's params


def test_gpu_implementations_are_registered_and_skipped_with_their_reason():
    import torch
    from benchmarks.plan import BenchOptions, plan
    assert {"torch-cuda", "torch-cuda-graph"} <= set(impls.names())
    for name in ("torch-cuda", "torch-cuda-graph"):
        assert impls.get(name).needs_gpu and impls.get(name).takes_tf32
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the skip path is not taken")
    cells, skipped = plan(BenchOptions.make("dry-run", impls=("torch-cpu", "torch-cuda-graph")))
    assert {c.config.impl for c in cells} == {"torch-cpu"}
    assert "torch-cuda-graph: no CUDA device (torch.cuda.is_available() is False)" in skipped
    assert impls.runnable("torch-cuda-graph", dtype="float32", batch_size=256).startswith("torch-cuda-graph: no CUDA")


def test_peak_probe_and_the_roofline_peak_of_each_mode():
    peaks = gpu.peak_gemm(device="cpu", n=64, rounds=2, round_seconds=0.002)
    assert set(peaks) == set(gpu.MODES) and all(v > 0 for v in peaks.values())
    measured = {"float32": 50e3, "tf32": 400e3, "float64": 60e3}
    assert gpu.roofline_peak("float32", False, measured) == (50e3, "GPU float32 GEMM, measured this session")
    assert gpu.roofline_peak("float32", True, measured)[0] == 400e3
    assert gpu.roofline_peak("float64", False, measured)[0] == 60e3
    value, words = gpu.roofline_peak("float32", False, {})
    assert np.isnan(value) and words == "n/a: no GPU float32 peak measured this session"
    assert gpu.session_peaks(False) == {}


@pytest.mark.integration
def test_gpu_check_without_a_gpu_says_so_and_exits_4(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_cli("gpu-check", "--output-dir", str(tmp_path), timeout=120)
    assert proc.returncode == 4
    assert proc.stderr.startswith("gpu-check: no CUDA device: torch.cuda.is_available() is False")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []            # stopped before any work


def gpu_cells() -> pd.DataFrame:
    """A gpu-check session as the tidy frame plus GPU columns, by hand (numbers illustrative)."""
    def cell(impl, device, kind, preset, dtype, batch, sps, parity, **extra):
        return {"impl": impl, "device": device, "kind": kind, "preset": preset, "dtype": dtype, "batch_size": batch,
                "status": "FINISHED", "reason": None, "samples_per_second_median": sps,
                "samples_per_second_q1": 0.95 * sps, "samples_per_second_q3": 1.05 * sps,
                "roofline_fraction": extra.pop("roofline", 0.01), "compile_seconds": 0.5,
                "parity_max_error": parity, **extra}
    return pd.DataFrame([
        cell("torch-cpu", "cpu", "throughput", "hw1-q3", "float32", 256, 120000.0, 2e-7, roofline=0.2,
             roofline_peak="CPU float32 GEMM (numpy), measured this session"),
        cell("torch-cpu", "cpu", "accuracy", "hw1-q4", "float64", 1, 9000.0, 3e-15),
        cell("torch-cuda", "cuda", "throughput", "hw1-q3", "float32", 256, 1.5e6, 3e-7, roofline=0.004,
             roofline_peak="GPU float32 GEMM, measured this session", peak_device_memory_bytes=300 * 2 ** 20,
             energy_joules_per_epoch=None, energy_note="n/a: NVML's total-energy counter is not offered here: x"),
        cell("torch-cuda", "cuda", "accuracy", "hw1-q4", "float64", 1, 4000.0, 5e-3),
        cell("torch-cuda-graph", "cuda", "throughput", "hw1-q3", "float32", 256, 7.5e6, 3e-7, roofline=0.02,
             roofline_peak="GPU float32 GEMM, measured this session", peak_device_memory_bytes=310 * 2 ** 20,
             energy_joules_per_epoch=3.25, capture_seconds=0.042),
    ])


def test_gpu_table_from_a_fixture():
    from benchmarks.gpucheck import IMPLS, verdict
    from reports.gpu import gpu_table
    table = gpu_table(gpu_cells(), IMPLS, impls.PARITY_TOLERANCE).set_index("implementation")
    cpu, eager, graph = (table.loc[n] for n in IMPLS)
    assert cpu["hw1-q3 epoch ms (IQR)"] == "500.00 (476.19-526.32)"
    assert (cpu["peak device memory"], cpu["J/epoch"]) == ("n/a (CPU)", "n/a (CPU)")
    assert cpu["% of peak"] == "20.00% of CPU float32 GEMM (numpy), measured this session"
    assert eager["hw1-q3 epoch ms (IQR)"] == "40.00 (38.10-42.11)"
    assert eager["J/epoch"] == "n/a: NVML's total-energy counter is not offered here: x"
    assert eager["parity (one step vs float64 reference)"] == "float32 3.0e-07 ok; float64 5.0e-03 FAIL > 1e-09"
    assert (graph["peak device memory"], graph["J/epoch"]) == ("310 MiB", "3.25")
    assert graph["hw1-q3 epoch ms (IQR)"] == "8.00 (7.62-8.42)"
    assert graph["compile s"] == "0.50 (capture 0.042)"
    assert graph["% of peak"] == "2.00% of GPU float32 GEMM, measured this session"
    assert verdict(gpu_cells()).endswith("8.00 ms (target <= 10 ms: met); eager 40.00 ms (5.0x)")
    missing = gpu_table(gpu_cells()[lambda f: f["impl"] != "torch-cuda-graph"], IMPLS, impls.PARITY_TOLERANCE)
    assert missing.iloc[2]["status"] == "no cells (skipped or not run)"
    why = {"torch-cuda-graph": "no CUDA device"}
    assert gpu_table(gpu_cells()[lambda f: f["impl"] != "torch-cuda-graph"], IMPLS, impls.PARITY_TOLERANCE,
                     why).iloc[2]["status"] == "skipped: no CUDA device"
    assert missing.iloc[2]["hw1-q3 epoch ms (IQR)"] == "no hw1-q3 float32 b256 throughput cell"


@pytest.mark.integration
def test_run_tf32_on_a_cpu_implementation_is_a_usage_error():
    proc = run_cli("run", "--impl", "torch-cpu", "--preset", "hw1-q3", "--tf32", timeout=120)
    assert proc.returncode == 2
    assert "error: --tf32 applies to float32 on torch-cuda and torch-cuda-graph only, not to torch-cpu" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
