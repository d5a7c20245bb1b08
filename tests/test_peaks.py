"""The peaks record (``tracking/peaks.py``, measured by ``benchmarks/peaks.py``): what a session
logs reads back as the same record, under the param names older sessions logged."""
import math

import pandas as pd

import tracking
from benchmarks import peaks as measured
from tracking import peaks
from tracking.peaks import Peak, Peaks


def as_run(params: dict, metrics: dict | None = None) -> pd.Series:
    """A parent run as ``tracking.read_session`` gives it: params as strings, metrics as numbers."""
    row = {"run_id": "r" * 32, "status": "FINISHED", **{f"params.{k}": str(v) for k, v in params.items()},
           **{f"metrics.{k}": v for k, v in (metrics or {}).items()}}
    return pd.Series(row)


def probe(dtype, threads, numpy, torch=()):
    return measured.PeakProbe(dtype, threads, 64, 0.01, numpy=list(numpy), torch=list(torch))


def test_measured_peaks_logged_and_read_back_are_the_same_record():
    probes = {("float32", False): probe("float32", 2, [100.0, 110.0, 120.0], [90.0] * 3),
              ("float64", False): probe("float64", 2, [50.0] * 3, [55.0, 60.0, 65.0]),
              ("float32", True): probe("float32", 1, [60.0, 62.0, 64.0])}
    record = measured.record(probes, {"float32": 50e3, "tf32": 400e3})
    end = {("float32", False): probe("float32", 2, [104.0] * 3)}
    metrics = measured.probe_metrics(probes, "start") | measured.probe_metrics(end, "end")
    params = record.params()
    # the names older sessions logged
    assert {"peak_gemm_gflops_float32", "peak_gemm_spread_float32", "peak_gemm_source_float32",
            "peak_gemm_gflops_float32_1thread", "peak_gemm_rule", "gpu_peak_gemm_gflops_tf32"} <= set(params)
    assert "peak_probe/start/float32_1thread/peak" in metrics and metrics["peak_probe/end/float32/peak"] == 104.0
    back = Peaks.from_run(as_run(params, metrics))
    assert set(back.cpu) == {p.logged() for p in record.cpu} and back.gpu == record.gpu and back.rule == measured.PEAK_RULE
    assert back.end["peak"] == 104.0 and back.end["spread"] == 0.0
    assert back.for_cell("float32", True) == Peak("float32", True, 62.0, round(4 / 62, 4), "numpy")
    assert back.for_cell("float64", False).source == "torch"
    meta = tracking.session_meta(as_run(params, metrics))
    assert meta["peak_record"] == back
    assert (back.gflops(), back.gflops(one_thread=True)) == ({"float32": 110.0, "float64": 60.0}, {"float32": 62.0})
    assert meta["peak_gemm_gflops"] == 110.0


def test_a_session_without_single_thread_peaks_gives_its_cells_the_session_threads_peak():
    record = measured.record({("float32", False): probe("float32", 2, [100.0] * 3),
                              ("float64", False): probe("float64", 2, [50.0] * 3)})
    back = Peaks.from_run(as_run(record.params()))
    assert back.get("float32", True) is None
    assert back.for_cell("float32", True) == Peak("float32", False, 100.0, 0.0, "numpy")
    assert back.gflops(one_thread=True) == {} and back.gpu == {} and back.end == {}


def test_a_session_of_the_first_kind_reads_its_metric_as_the_float32_peak():
    old = Peaks.from_run(as_run({"mode": "full"}, {"peak_gemm_gflops": 230.0}))
    assert old.cpu == (Peak("float32", False, 230.0),) and old.rule == ""
    assert math.isnan(old.for_cell("float64", False).gflops)
    assert math.isnan(tracking.session_meta(as_run({"mode": "full"}))["peak_gemm_gflops"])      # none recorded


def test_a_report_reads_the_record_from_its_meta_and_a_cell_its_peak_by_exact_key():
    record = measured.record({("float32", False): probe("float32", 2, [100.0] * 3)})
    assert Peaks.from_meta(tracking.session_meta(as_run(record.params()))) == Peaks.from_run(as_run(record.params()))
    assert Peaks.from_meta({"peak_gemm_gflops": 199.0}) == Peaks((Peak("float32", False, 199.0),))   # exported to JSON
    assert Peaks.from_meta({}) == Peaks()
    assert [peaks.on_one_thread(k) for k in ("float32_1thread", "float64_1thread", "float32", peaks.GPU_KEY, None)] \
        == [True, True, False, False, False]
    assert "peak_gemm_spread_float32_1thread" in peaks.MEASURED_PARAMS and "peak_gemm_rule" not in peaks.MEASURED_PARAMS
