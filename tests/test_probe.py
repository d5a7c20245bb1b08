"""The peak probe (repeats, the rule, single-thread peaks for single-threaded cells),
each cell's peak resident memory, and the report showing the probe's spread."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest

import impls
from benchmarks import cells, peaks
from benchmarks.config import PRESETS
from benchmarks.plan import BenchOptions, Cell
from tests.helpers import PEAKS, ROOT
from tracking.peaks import Peak, Peaks


def test_each_repeat_is_as_many_gemms_as_fill_its_seconds(monkeypatch):
    clock = {"t": 0.0}
    calls = []

    def gemm():                                     # each call "takes" 0.125 s on a fake clock
        calls.append(clock["t"])
        clock["t"] += 0.125
    monkeypatch.setattr(peaks, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"]))
    rates = peaks._repeats(gemm, 2e9, repeats=5, seconds=0.3)
    # 3 calls (0.375 s) per repeat: at least 0.3 s each, rate = flops / elapsed; one untimed call first
    assert rates == [pytest.approx(3 * 2e9 / 0.375 / 1e9)] * 5
    assert len(calls) == 1 + 5 * 3


def test_a_real_probe_has_five_repeats_per_library_and_restores_torch_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    probe = peaks.peak_probe("float32", threads=1, n=64, seconds=0.01)
    assert len(probe.numpy) == 5 and len(probe.torch) == 5
    assert all(r > 0 for r in probe.numpy + probe.torch)
    assert probe.threads == 1 and torch.get_num_threads() == before
    assert probe.peak == max(probe.numpy_median, probe.torch_median)


def test_the_rule_is_the_larger_median_and_the_spread_is_of_its_repeats():
    p = peaks.PeakProbe("float32", 2, 2048, 0.3, numpy=[1.0, 2.0, 3.0, 4.0, 5.0], torch=[6.0, 7.0, 8.0, 9.0, 10.0])
    assert (p.peak, p.source, p.spread) == (8.0, "torch", 0.5)
    q = peaks.PeakProbe("float64", 2, 2048, 0.3, numpy=[10.0, 11.0, 12.0, 13.0, 14.0], torch=[1.0] * 5)
    assert (q.peak, q.source, q.spread) == (12.0, "numpy", pytest.approx(4 / 12))
    alone = peaks.PeakProbe("float32", 2, 2048, 0.3, numpy=[5.0] * 5)        # torch not installed
    assert (alone.peak, alone.source, alone.spread) == (5.0, "numpy", 0.0) and np.isnan(alone.torch_median)
    record = peaks.record({("float32", False): p, ("float32", True): q})
    assert record.for_cell("float32", False) == Peak("float32", False, 8.0, 0.5, "torch")
    assert record.for_cell("float32", True) == Peak("float32", True, 12.0, pytest.approx(4 / 12), "numpy")
    params = record.params()
    assert params["peak_gemm_gflops_float32"] == 8.0 and params["peak_gemm_source_float32"] == "torch"
    assert params["peak_gemm_gflops_float32_1thread"] == 12.0 and "larger" in params["peak_gemm_rule"]
    metrics = peaks.probe_metrics({("float32", False): p}, "end")
    assert metrics["peak_probe/end/float32/torch_median"] == 8.0 and metrics["peak_probe/end/float32/spread"] == 0.5


def test_single_threaded_cells_are_divided_by_the_single_thread_peak(monkeypatch):
    base = PRESETS["hw1-q4"].replace(dtype="float32")
    sample, batch = Cell("throughput", base.replace(impl="numpy-sample")), Cell("throughput", base.replace(impl="numpy-batch"))
    assert cells.one_thread("numpy-sample") and cells.one_thread("numba-sample") and not cells.one_thread("numpy-batch")
    value, words = cells.roofline_peak(sample, PEAKS, None)
    assert value == 60.0 and "1 thread" in words and "spread 4.0%" in words
    assert cells.roofline_peak(batch, PEAKS, None)[0] == 100.0
    params = cells.cell_params(sample, PEAKS, BenchOptions())
    assert (params["peak_gemm"], params["peak_gemm_gflops"], params["peak_gemm_spread"]) == ("float32_1thread", 60.0, 0.04)
    assert cells.cell_params(batch, PEAKS, BenchOptions())["peak_gemm"] == "float32"
    # a caller without single-thread peaks: the session's
    assert cells.roofline_peak(sample, Peaks((Peak("float32", False, 100.0),)), None)[0] == 100.0
    # the class attribute, where set, decides
    import impls
    monkeypatch.setattr(impls.get("numpy-batch"), "single_threaded", True)
    assert cells.one_thread("numpy-batch") and cells.roofline_peak(batch, PEAKS, None)[0] == 60.0


@pytest.mark.integration
def test_peak_rss_is_this_cells_own():
    """In a fresh process, as a worker is: inside a long test process, freed memory already
    resident can serve a new array without the resident size growing (seen in CI)."""
    code = """
import json, numpy as np
from benchmarks import memory
words = memory.reset_peak_rss()
before = memory.peak_rss_mb()
block = np.ones(100 * 2 ** 20 // 8)                  # 100 MiB, touched
grown = memory.peak_rss_mb()
del block
memory.reset_peak_rss()
print(json.dumps({"words": words, "before": before, "grown": grown, "after": memory.peak_rss_mb()}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["grown"] - got["before"] > 90, got
    if "own peak" in got["words"]:                      # Linux: the reset brings it back down
        assert got["after"] < got["grown"] - 90, got


def test_the_table_shows_the_probe_spread_beside_the_roofline_and_the_memory():
    from reports.tables import roofline_peak_text, summary_table
    row = {"peak_gemm_gflops": 60.0, "peak_gemm": "float32_1thread", "peak_gemm_spread": 0.04}
    assert roofline_peak_text(pd.Series(row)) == "60 GFLOP/s, 1 thread, spread 4.0%"
    assert roofline_peak_text(pd.Series({"peak_gemm_gflops": 100.0})) == "100 GFLOP/s, spread not measured"
    frame = pd.DataFrame([{"run_id": "r", "cell": "c", "kind": "throughput", "impl": "numpy-sample", "device": "cpu",
                           "preset": "hw1-q4", "network": "n", "dtype": "float32", "batch_size": 1, "seed": 0,
                           "status": "FINISHED", "samples_per_second_median": 10.0, "samples_per_second_q1": 9.0,
                           "samples_per_second_q3": 11.0, "roofline_fraction": 0.1, "compile_seconds": 0.0,
                           "parity_max_error": 0.0, "peak_rss_mb": 123.4, **row}])
    table = summary_table(frame, impls.SPEEDUP_BASE)
    cols = list(table.columns)
    assert cols.index("roofline peak") == cols.index("% roofline") + 1
    assert table["roofline peak"].iat[0] == "60 GFLOP/s, 1 thread, spread 4.0%" and table["peak RSS MiB"].iat[0] == "123"


@pytest.mark.integration
def test_a_dry_run_logs_the_probe_and_every_cells_peak_rss(dry_run):
    import mlflow
    uri, proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("backprop-bench").experiment_id])
    parent = next(r for r in runs if r.data.tags["bpb.kind"] == "session")
    children = [r for r in runs if r.data.tags["bpb.kind"] == "cell"]
    params, metrics = parent.data.params, parent.data.metrics
    for key in ("float32", "float64", "float32_1thread"):      # dry run: float32 cells, numpy-sample among them
        assert float(params[f"peak_gemm_gflops_{key}"]) > 0 and f"peak_gemm_spread_{key}" in params
        for fig in ("numpy_median", "numpy_spread", "torch_median", "torch_spread", "peak", "spread"):
            assert f"peak_probe/start/{key}/{fig}" in metrics
    assert {"peak_probe/end/float32/peak", "peak_probe/end/float32/spread"} <= set(metrics)
    from benchmarks.peaks import DRY_RUN_RULE
    assert params["peak_gemm_rule"] == DRY_RUN_RULE          # what its probe was: not a peak
    for run in children:
        assert run.data.metrics["peak_rss_mb"] > 10, run.info.run_name
        assert "own peak" in run.data.tags["bpb.peak_rss"]
        assert run.data.params["peak_gemm"] in ("float32", "float32_1thread", "float64", "float64_1thread")
    sample = [r for r in children if r.data.tags["implementation"] == "numpy-sample"]
    assert sample and all(r.data.params["peak_gemm"].endswith("_1thread") for r in sample)
    md = (report / "latest" / "report.md").read_text()
    assert "peak probe spread" in md and "peak probe at the session's end" in md
    assert f"roofline peak rule: {DRY_RUN_RULE}" in md and "2048^3" not in md
    assert "- GEMM rate of a dry run's small probe, not a peak (measured at session start): float32 " in md
    assert "| % roofline | roofline peak |" in md and "peak RSS MiB" in md and ", spread " in md
