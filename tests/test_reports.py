"""Reports rendered from a checked-in fixture (tests/fixtures/report_session.json): no MLflow."""
import json
from pathlib import Path

import pandas as pd
import pytest

import impls
from reports.render import write_report
from reports.tables import summary_table

FIXTURE = Path(__file__).parent / "fixtures" / "report_session.json"


@pytest.fixture(scope="module")
def session():
    payload = json.loads(FIXTURE.read_text())
    cells = pd.DataFrame(payload["cells"])
    epochs = pd.DataFrame(payload["epochs"])
    return cells, epochs, payload["examples"], payload["meta"]


def test_report_files_and_figures(session, tmp_path):
    cells, epochs, examples, meta = session
    paths = write_report(cells, epochs, examples, meta, tmp_path, speedup_base=impls.SPEEDUP_BASE, peers=impls.PEERS)
    for name in ("throughput", "accuracy", "loss", "examples", "markdown", "html"):
        assert paths[name].is_file() and paths[name].stat().st_size > 1000, name
    for name in ("throughput", "accuracy", "loss", "examples"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["markdown"].read_text()
    for name in ("throughput", "accuracy", "loss", "examples"):
        assert f"({name}.png)" in md
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 4 and "<table" in html   # self-contained
    assert "src=\"http" not in html and "href=\"http" not in html


def test_table_has_a_row_per_cell_and_no_empty_entries(session):
    cells, *_ = session
    table = summary_table(cells, impls.SPEEDUP_BASE)
    assert len(table) == len(cells)
    assert list(table.columns) == ["implementation", "cell", "network", "dtype", "batch", "samples/s (median)",
                                   "IQR", "speed-up", "% roofline", "roofline peak", "% shape peak", "shape peak",
                                   "compile s", "peak RSS MiB",
                                   "test acc", "time to target s",
                                   "parity max err", "status"]
    assert not table.isna().any().any()
    assert not (table.astype(str).apply(lambda col: col.str.strip()) == "").any().any()
    assert not table.astype(str).apply(lambda col: col.str.contains("nan")).any().any()


def test_table_values(session):
    cells, *_ = session
    table = summary_table(cells, impls.SPEEDUP_BASE)
    ok = table[table["status"] == "ok"]
    base = ok[(ok["implementation"] == "numpy-sample") & (ok["cell"] == "throughput")]
    assert set(base["speed-up"]) == {"1.00x"}
    # throughput rows have no accuracy; accuracy rows have one
    assert set(table.loc[table["cell"] == "throughput", "test acc"]) == {"n/a"}
    acc = ok[ok["cell"].str.startswith("accuracy")]
    assert acc["test acc"].map(float).between(0, 1).all()
    failed = table[table["status"] != "ok"]
    assert len(failed) == 5
    assert failed["status"].str.contains("parity check failed|injected failure").all()
    assert (failed["samples/s (median)"] == "failed").all()


def test_speedup_uses_the_same_network_and_dtype(session):
    from reports.tables import with_speedup
    cells, *_ = session
    s = with_speedup(cells, impls.SPEEDUP_BASE)
    row = s[(s["impl"] == "numba-sample") & (s["kind"] == "throughput") & (s["dtype"] == "float32")].iloc[0]
    base = s[(s["impl"] == "numpy-sample") & (s["kind"] == "throughput") & (s["dtype"] == "float32")
             & (s["network"] == row["network"])].iloc[0]
    assert row["speedup"] == pytest.approx(row["samples_per_second_median"] / base["samples_per_second_median"])


def test_figures_are_labelled(session):
    from reports.figures import accuracy_figure, examples_figure, loss_figure, throughput_figure
    from tracking.peaks import Peaks
    cells, epochs, examples, meta = session
    figs = [throughput_figure(cells, Peaks.from_meta(meta), impls.SPEEDUP_BASE), accuracy_figure(epochs, {"hw1-q4": 0.8}),
            loss_figure(epochs), examples_figure(examples, next(iter(examples["predictions"])))]
    for fig in figs:
        assert fig._suptitle is not None or all(ax.get_title() for ax in fig.axes)
        for ax in fig.axes:
            if ax.get_images():             # the test images themselves
                continue
            assert ax.get_title() or ax.get_ylabel(), ax
            assert ax.get_xlabel() or ax.get_ylabel()
    assert figs[0].axes[0].get_yscale() == "log"
    assert "samples/s" in figs[0].axes[0].get_ylabel()
    bar_labels = [t.get_text() for ax in figs[3].axes for t in ax.get_yticklabels()]
    assert "Ankle boot" in bar_labels


def with_peers(cells: pd.DataFrame) -> pd.DataFrame:
    """The recorded session plus a sklearn-mlp and a jax-cpu hw1-q3 cell, each a copy of the
    session's numpy-batch one with its rate scaled (0.68x and 1.28x, the issue's figures)."""
    base = cells[(cells["impl"] == "numpy-batch") & (cells["preset"] == "hw1-q3") & (cells["kind"] == "accuracy")]
    rows = []
    for name, factor, acc in (("sklearn-mlp", 0.68, 0.8512), ("jax-cpu", 1.28, 0.8601)):
        row = base.copy()
        row["impl"], row["cell"] = name, row["cell"].str.replace("numpy-batch", name)
        for col in ("samples_per_second_median", "samples_per_second_q1", "samples_per_second_q3"):
            row[col] = row[col] * factor
        row["test_accuracy"] = acc
        rows.append(row)
    return pd.concat([cells, *rows], ignore_index=True)


def test_peers_section_renders_beside_the_families(session, tmp_path):
    from reports.peers import peers_section
    cells, epochs, examples, meta = session
    assert peers_section(cells, impls.PEERS) is None                      # no peer ran: no section
    title, lines, table = peers_section(with_peers(cells), impls.PEERS)
    assert title.startswith("Peers")
    assert table["implementation"].tolist() == ["numpy-batch", "numba-batch", "torch-cpu", "sklearn-mlp", "jax-cpu"]
    assert table["kind"].tolist() == ["family"] * 3 + ["peer"] * 2
    row = table.set_index("implementation")
    assert row.loc["numpy-batch", "x numpy-batch"] == "1.00x"
    assert row.loc["sklearn-mlp", "x numpy-batch"] == "0.68x" and row.loc["jax-cpu", "x numpy-batch"] == "1.28x"
    assert row.loc["jax-cpu", "test acc"] == "0.8601"
    assert lines[0] == "sklearn-mlp runs at 0.68x numpy-batch; jax-cpu runs at 1.28x numpy-batch."
    assert "sqrt(1 - b2^t)" in lines[1]
    md = write_report(with_peers(cells), epochs, examples, meta, tmp_path, speedup_base=impls.SPEEDUP_BASE, peers=impls.PEERS)["markdown"].read_text()
    assert "## Peers: scikit-learn and JAX beside the families (hw1-q3)" in md
    assert "| sklearn-mlp | peer | float32 | 256 |" in md
