"""The shape peak (benchmarks/shape_peaks.py): the products of one step, the peak's arithmetic, a
real measurement, and a batch cell's fraction of it in the report's table."""
import math

import numpy as np
import pandas as pd
import pytest

import impls
from benchmarks import peaks, shape_peaks
from benchmarks.cells import shape_of
from benchmarks.config import PRESETS
from benchmarks.plan import Cell
from reports.tables import summary_table
from tracking.peaks import shape_key


@pytest.mark.parametrize("preset", ["hw1-q3", "hw1-q4"])
@pytest.mark.parametrize("batch", [1, 256])
def test_the_products_are_the_flops_the_roofline_counts(preset, batch):
    c = PRESETS[preset]
    products = shape_peaks.step_products(c.sizes, batch)
    per_sample = impls.flops_per_sample(impls.NetSpec(c.sizes, c.activation))
    assert sum(p.flops for p in products) == batch * per_sample
    layers = len(c.sizes) - 1
    assert len(products) == 3 * layers - 1                    # forward and dW each layer, dA all but the first
    assert [p.label for p in products][:3] == ["forward 1", "dW 1", "forward 2"]
    dA2 = next(p for p in products if p.label == "dA 2")
    assert (dA2.m, dA2.k, dA2.n, dA2.b_transposed) == (batch, c.sizes[2], c.sizes[1], True)


def test_each_product_counts_at_its_faster_library():
    p = shape_peaks.ShapePeak((4, 3, 2), 8, "float32", {
        "numpy": {"forward 1": 1.0, "dW 1": 1.0, "forward 2": 4.0, "dW 2": 4.0, "dA 2": 4.0},
        "torch": {"forward 1": 3.0, "dW 1": 3.0, "forward 2": 1.0, "dW 2": 1.0, "dA 2": 1.0}})
    assert p.step_seconds() == 5.0 and p.step_seconds("numpy") == 14.0 and p.step_seconds("torch") == 9.0
    flops = sum(q.flops for q in shape_peaks.step_products((4, 3, 2), 8))
    assert p.gflops() == pytest.approx(flops / 5.0 / 1e9)
    figures = p.figures()
    assert figures["gflops"] > figures["torch_gflops"] > figures["numpy_gflops"]
    assert p.key == shape_key((4, 3, 2), 8, "float32") == "4-3-2_b8_float32"


def test_a_real_measurement_times_every_product_through_both_libraries_on_the_threads_asked():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    p = shape_peaks.shape_peak((784, 32, 32, 10), 32, "float32", threads=1, seconds=0.005)
    assert torch.get_num_threads() == before
    labels = [q.label for q in shape_peaks.step_products((784, 32, 32, 10), 32)]
    assert set(p.seconds) == {"numpy", "torch"}
    assert all(list(by) == labels and all(s > 0 for s in by.values()) for by in p.seconds.values())
    assert p.gflops() >= max(p.gflops("numpy"), p.gflops("torch"))
    record = peaks.record({}, None, {p.key: p})
    assert record.shapes == {p.key: p.gflops()}


def test_only_batch_cells_on_the_cpu_have_a_shape():
    q3 = PRESETS["hw1-q3"]
    assert shape_of(Cell("throughput", q3.replace(impl="numpy-batch", batch_size=256))) == (tuple(q3.sizes), 256, q3.dtype)
    assert shape_of(Cell("accuracy", q3.replace(impl="torch-cpu"))) == (tuple(q3.sizes), q3.batch_size, q3.dtype)
    assert shape_of(Cell("throughput", q3.replace(impl="numpy-sample", batch_size=1))) is None
    assert shape_of(Cell("throughput", q3.replace(impl="torch-cuda", batch_size=256))) is None
    assert shape_of(Cell("scaling", q3.replace(impl="torch-cpu"), "base")) is None


def _cell(impl, batch, fraction, peak):
    return {"run_id": impl, "cell": f"throughput/{impl}", "kind": "throughput", "impl": impl, "device": "cpu",
            "preset": "hw1-q3", "network": "784-256-128-64-10 relu", "dtype": "float32", "batch_size": batch,
            "seed": 0, "status": "FINISHED", "reason": None, "samples_per_second_median": 1000.0,
            "samples_per_second_q1": 900.0, "samples_per_second_q3": 1100.0, "roofline_fraction": 0.01,
            "shape_fraction": fraction, "shape_peak_gflops": peak, "compile_seconds": 0.0,
            "parity_max_error": 1e-7, "peak_gemm_gflops": 500.0, "peak_gemm": "float32", "peak_gemm_spread": 0.01}


def test_the_table_shows_each_batch_cells_fraction_of_its_shape_peak():
    cells = pd.DataFrame([_cell("numpy-sample", 1, math.nan, math.nan), _cell("numpy-batch", 256, 0.774, 118.04)])
    table = summary_table(cells, impls.SPEEDUP_BASE).set_index("implementation")
    assert table.loc["numpy-batch", "% shape peak"] == "77.4"
    assert table.loc["numpy-batch", "shape peak"] == "118 GFLOP/s, this network at b256"
    assert table.loc["numpy-sample", "% shape peak"] == "n/a" and table.loc["numpy-sample", "shape peak"] == "n/a"
    assert not np.any(table.astype(str).apply(lambda col: col.str.contains("nan")))


def test_the_headline_says_how_far_the_fastest_is_from_its_shape_peak():
    from reports.answer import headline
    rows = [_cell("numpy-sample", 256, math.nan, math.nan), _cell("numpy-batch", 256, 0.774, 118.04),
            _cell("torch-cpu", 256, 0.41, 118.04)]
    rows[1]["samples_per_second_median"], rows[1]["samples_per_second_q1"], rows[1]["samples_per_second_q3"] = 5e4, 4.9e4, 5.1e4
    [line, *_] = headline(pd.DataFrame(rows), impls.SPEEDUP_BASE)
    assert "**numpy-batch** is fastest" in line and "77% of what this machine's GEMMs reach at these shapes" in line
