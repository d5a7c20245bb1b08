"""reports/geomean.py: one number per implementation. Known values exactly; the interval's
coverage on a seeded noise model with a known true speed-up; the report's and compare's cells."""
import math

import numpy as np
import pandas as pd
import pytest

from reports.geomean import geomean_ci, overall_changes, overall_speedups, sentence


def _cells(rows):
    """Tidy throughput cells: (run_id, impl, network, dtype[, status])."""
    return pd.DataFrame([{"run_id": r[0], "impl": r[1], "network": r[2], "dtype": r[3], "kind": "throughput",
                          "status": r[4] if len(r) > 4 else "FINISHED",
                          "cell": f"throughput/{r[1]}/{r[2]}/{r[3]}/b1/s0"} for r in rows])


def test_known_speedups_give_their_geometric_mean_exactly():
    cells = _cells([("b32", "numpy-sample", "hw1-q4", "float32"), ("b64", "numpy-sample", "hw1-q4", "float64"),
                    ("x32", "fast", "hw1-q4", "float32"), ("x64", "fast", "hw1-q4", "float64"),
                    ("f", "broken", "hw1-q4", "float32", "FAILED")])
    repeats = {"b32": [10, 10, 10], "b64": [5, 5, 5], "x32": [20, 20, 20], "x64": [40, 40, 40], "f": [1, 1, 1]}
    table = overall_speedups(cells, repeats, "numpy-sample")
    [row] = table.itertuples()                   # the failed cell's implementation has no number
    assert row.impl == "fast" and row.cells == 2
    assert row.geomean == pytest.approx(4.0) and row.low == pytest.approx(4.0) and row.high == pytest.approx(4.0)
    assert "fast 4x [4, 4] (2 cells)" in sentence(table, "speed-ups over numpy-sample")


def test_a_cell_without_its_base_or_its_repeats_is_left_out():
    cells = _cells([("b", "numpy-sample", "hw1-q4", "float32"), ("x", "fast", "hw1-q4", "float32"),
                    ("y", "fast", "hw1-q3", "float32"), ("z", "fast", "hw1-q4", "float32")])
    table = overall_speedups(cells, {"b": [1.0, 1.0], "x": [3.0, 3.0], "y": [9.0], "z": []}, "numpy-sample")
    assert table.to_dict(orient="records")[0]["cells"] == 1     # y: no base on hw1-q3; z: no repeats
    assert overall_speedups(cells, {}, "numpy-sample").empty


def test_the_interval_covers_a_known_speedup_at_its_level():
    """A seeded noise model: 6 cells, each a true speed-up times lognormal repeats (sigma 10%, 7
    repeats a side); the base shared by the cells of a dtype, as in a session. Over 300 sessions
    the 95% interval holds the true geometric mean in 88-99% of them (a bootstrap of medians of 7
    repeats is coarse; 291 of 300 when written), and the point estimate is unbiased within 1%."""
    rng = np.random.default_rng(11)
    truth = {"a32": 3.0, "b32": 5.0, "c32": 12.0, "a64": 2.0, "b64": 4.0, "c64": 6.0}
    true_mean = math.exp(np.mean(np.log(list(truth.values()))))
    covered, points = 0, []
    for trial in range(300):
        repeats, groups = {}, {"x": []}
        for dtype in ("32", "64"):
            repeats[f"base{dtype}"] = 100 * np.exp(rng.normal(0, 0.10, 7))
        for cell, up in truth.items():
            repeats[cell] = 100 * up * np.exp(rng.normal(0, 0.10, 7))
            groups["x"].append((cell, f"base{cell[1:]}"))
        row = geomean_ci(repeats, groups, draws=1000, seed=trial).iloc[0]
        covered += row.low <= true_mean <= row.high
        points.append(row.geomean)
    assert 0.88 <= covered / 300 <= 0.99, covered
    assert abs(math.exp(np.mean(np.log(points))) / true_mean - 1) < 0.01


def test_compare_gives_each_implementation_its_change_over_the_cells_both_sessions_finished():
    a = _cells([("a1", "numpy-batch", "hw1-q4", "float32"), ("a2", "numpy-batch", "hw1-q4", "float64"),
                ("a3", "torch-cpu", "hw1-q4", "float32"), ("a4", "numba-sample", "hw1-q4", "float32")])
    b = _cells([("b1", "numpy-batch", "hw1-q4", "float32"), ("b2", "numpy-batch", "hw1-q4", "float64"),
                ("b3", "torch-cpu", "hw1-q4", "float32")])
    a_rep = {"a1": [100, 101, 99], "a2": [50, 50, 50], "a3": [10, 10, 10], "a4": [7, 7, 7]}
    b_rep = {"b1": [66.7, 66.7, 66.7], "b2": [33.3, 33.4, 33.3], "b3": [10, 10, 10]}
    table = overall_changes(a, a_rep, b, b_rep).set_index("impl")
    assert set(table.index) == {"numpy-batch", "torch-cpu"}        # numba-sample ran in A only
    assert table.loc["numpy-batch", "cells"] == 2 and table.loc["numpy-batch", "geomean"] == pytest.approx(2 / 3, rel=0.01)
    assert table.loc["numpy-batch", "high"] < 1 and table.loc["torch-cpu", "geomean"] == pytest.approx(1.0)
