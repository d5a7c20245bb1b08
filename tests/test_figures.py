"""The throughput figure (``reports/figures.py``), drawn from the checked-in fixture: what each
bar says, which panels exist, and what its percentages divide by."""
import json
from pathlib import Path

import pandas as pd
import pytest

import impls
from reports.figures import peak_note, throughput_figure, throughput_notes
from tracking.peaks import Peak, Peaks, peak_key

FIXTURE = Path(__file__).parent / "fixtures" / "report_session.json"


@pytest.fixture(scope="module")
def cells():
    return pd.DataFrame(json.loads(FIXTURE.read_text())["cells"])


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_every_panel_has_bars_and_each_bar_its_own_percentage(cells):
    """The fixture has no hw1-q3 float64 bars: no empty panel for it, and no right axis (it ran
    far past 100% and told one peak for cells that divide by two)."""
    fig = throughput_figure(cells, Peaks((Peak("float32", False, 199.0), Peak("float64", False, 95.0))),
                            impls.SPEEDUP_BASE)
    assert [ax.get_title() for ax in fig.axes] == ["784-32-32-10 sigmoid, float32 (throughput cells)",
                                                   "784-32-32-10 sigmoid, float64 (throughput cells)",
                                                   "784-256-128-64-10 relu, float32 (accuracy cells' epochs)"]
    assert all(ax.patches for ax in fig.axes)
    assert not any(ax.child_axes for ax in fig.axes)
    labels = texts(fig)
    # numba-batch's hw1-q3 cell: 13x numpy-sample's samples/s, 9.1% of its peak (roofline 0.0911)
    assert "13x · 9.1%" in labels and "1x · 0.78%" in labels
    assert all(" · " in t and t.endswith("%") for t in labels)


def one_session(cells: pd.DataFrame, threads: int) -> pd.DataFrame:
    """The fixture's float32 cells as a session on ``threads`` threads recorded them: the
    per-sample implementations divide by the 1-thread peak (the same probe on 1 thread)."""
    part = cells[cells["dtype"] == "float32"].copy()
    single = part["impl"].str.endswith("-sample")
    part["peak_gemm"] = [peak_key("float32", s) for s in single]
    part["peak_gemm_gflops"] = [100.0 if s or threads == 1 else 190.0 for s in single]
    part["peak_gemm_spread"] = [0.05 if s or threads == 1 else 0.12 for s in single]
    return part


def test_the_peaks_named_under_a_panel_are_the_ones_its_cells_used(cells):
    one = peak_note(one_session(cells, 1), "float32", Peaks())
    assert one == "% of the measured float32 peak GEMM: 100 GFLOP/s (spread 5%)" and "thread" not in one
    two = peak_note(one_session(cells, 2), "float32", Peaks())
    assert two == ("% of the measured float32 peak GEMM: 190 GFLOP/s (spread 12%) on the session's threads, "
                   "100 (spread 5%) on 1 thread (numpy-sample, numba-sample)")
    assert peak_note(cells.head(0).assign(peak_gemm_gflops=[]), "float64",
                     Peaks((Peak("float64", False, 95.0, 0.02),))) \
        == "% of the measured float64 peak GEMM (95 GFLOP/s, spread 2%)"


def test_a_cell_above_its_peak_is_shown_as_measured_and_named(cells):
    fast = one_session(cells, 2)
    row = fast.index[(fast["impl"] == "torch-cpu") & (fast["kind"] == "accuracy")][0]
    fast.loc[row, "roofline_fraction"] = 1.12
    assert any(t.endswith("· 112%") for t in texts(throughput_figure(fast, Peaks(), impls.SPEEDUP_BASE)))
    notes = throughput_notes(fast)
    assert len(notes) == 2 and notes[1].startswith("above the peak: `accuracy/torch-cpu/hw1-q3/")
    assert "112% of its measured peak GEMM (190 GFLOP/s, probe spread 12%)" in notes[1]
    assert len(throughput_notes(cells)) == 1
