"""gpu-check end to end on a CPU: the GPU check's whole flow (GPU tests, session, read-back,
table, gpu-check.md attached to the session) with the no-GPU guard lifted and a tiny matrix.
The GPU rows come out as 'no cells' here, with the registry's reason in the session."""
import pytest

from benchmarks import gpucheck
from benchmarks.plan import BenchOptions
from tests.helpers import brief_probes, sqlite_uri


@pytest.mark.integration
def test_gpu_check_flow_on_a_cpu(tmp_path, monkeypatch, capsys):
    import tracking
    monkeypatch.setattr(gpucheck, "no_gpu_reason", lambda: None)
    brief_probes(monkeypatch)                       # the CPU's peaks: not what this checks
    monkeypatch.setattr(gpucheck, "check_options", lambda: BenchOptions.make(
        "dry-run", ("hw1-q3",), impls=gpucheck.IMPLS, sweep_preset="hw1-q3", batch_sizes=(256,)))
    uri = sqlite_uri(tmp_path)
    store = tracking.connect(uri)
    assert gpucheck.run_gpu_check(store, out_dir=str(tmp_path / "out"), threads=1, tests=True) == 0
    out = capsys.readouterr().out
    # the GPU tests ran and, with no GPU, all skipped with a reason
    assert "GPU tests (pytest -m gpu): 0 passed, 0 failed, " in out and " skipped (pytest exit 0)" in out
    assert "torch-cuda-graph: no CUDA device" in out                    # SKIPPED in the session
    assert "hw1-q3 epoch with the captured step: not measured" in out
    session = tracking.latest_session(store, mode="gpu-check")
    md = (tmp_path / "out" / session / "gpu-check.md").read_text()
    assert "| torch-cpu | cpu | float32 " in md and "n/a (CPU) | n/a (CPU)" in md
    assert "| torch-cuda-graph | n/a | not measured | no hw1-q3 float32 b256 throughput cell" in md
    assert "| skipped: no CUDA device (torch.cuda.is_available() is False) |" in md
    assert "GPU peak GEMM this session, TFLOP/s: not measured" in md
    parent, _, _ = tracking.read_session(store, session)
    assert parent["params.mode"] == "gpu-check"
    assert parent["tags.bpb.gpu_check"].startswith("tests: 0 passed, 0 failed")
