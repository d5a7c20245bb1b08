"""The comparison table: one row per cell, from the tidy cells frame (tracking.CELL_COLUMNS).

Every entry is filled: a number, or a word saying why there is none ("n/a" where the value
does not apply to that kind of cell, "not reached", "failed").
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.stats import olympic_mean
from reports.text import MarkdownBlock, at_least, markdown_text, one_line
from tracking.peaks import GPU_KEY, on_one_thread

NA = "n/a"


def with_speedup(cells: pd.DataFrame, speedup_base: str) -> pd.DataFrame:
    """Adds ``speedup``: samples/s over ``speedup_base``'s (numpy-sample's: ``impls.SPEEDUP_BASE``) on
    the same network and dtype, measured in the same session (its throughput cell when there is
    one, else its accuracy cell)."""
    cells = cells.copy()
    base = cells[(cells["impl"] == speedup_base) & (cells["status"] == "FINISHED")]
    base = base.assign(order=(base["kind"] != "throughput").astype(int)).sort_values("order")
    ref = base.drop_duplicates(["network", "dtype"]).set_index(["network", "dtype"])["samples_per_second_median"]
    keys = list(zip(cells["network"], cells["dtype"]))
    cells["speedup"] = [cells["samples_per_second_median"].iloc[i] / ref[k] if k in ref.index else np.nan
                        for i, k in enumerate(keys)]
    return cells


def _num(value, fmt: str, missing: str = NA) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return missing
    return format(value, fmt)


GROUP = ["kind", "impl", "preset", "network", "dtype", "batch_size"]


def summary_table(cells: pd.DataFrame, speedup_base: str, detects: dict[str, float] | None = None) -> pd.DataFrame:
    """Display table (strings), one row per cell; cells that differ only by seed share a row,
    with test accuracy as mean ± std and time-to-target as an olympic mean over the seeds.
    Accuracy cells come first, then the throughput sweep. ``detects``: cell -> the smallest
    slowdown ``compare`` can see there (a noise profile); with it, a column ``detects here``."""
    cells = with_speedup(cells, speedup_base)
    order = {name: i for i, name in enumerate(dict.fromkeys(cells["impl"]))}
    cells = cells.assign(_kind=(cells["kind"] != "accuracy").astype(int), _impl=cells["impl"].map(order))
    cells = cells.sort_values(["_kind", "preset", "network", "dtype", "batch_size", "_impl"], kind="stable")
    rows = []
    for _, g in cells.groupby(GROUP, sort=False, dropna=False):
        row = _row(g, speedup_base)
        if detects:
            seen = [detects[c] for c in g["cell"] if c in detects]
            row["detects here"] = NA if not seen else at_least(max(seen))
        rows.append(row)
    return pd.DataFrame(rows)


def _row(g: pd.DataFrame, speedup_base: str) -> dict:
    c = g.iloc[0]
    done = g[g["status"] == "FINISHED"]
    ok = len(done) == len(g)
    is_acc = c["kind"] == "accuracy"
    failed = "failed" if done.empty else NA
    n = len(g)
    med = float(done["samples_per_second_median"].median()) if not done.empty else float("nan")
    speedup = float(done["speedup"].median()) if not done.empty else float("nan")
    if is_acc and not done.empty:
        accs = done["test_accuracy"].astype(float)
        acc = f"{accs.mean():.4f}" if len(done) == 1 else f"{accs.mean():.4f} ± {accs.std(ddof=1):.4f} ({len(done)} seeds)"
        ttt = olympic_mean(done["time_to_target_seconds"].astype(float))
        reached = int(done["time_to_target_seconds"].notna().sum())
        if math.isnan(ttt):
            target = f"not reached ({c['target_accuracy']:g})"
        elif len(done) == 1:
            target = f"{ttt:.2f}"
        else:
            target = f"{ttt:.2f} (olympic mean, {reached}/{len(done)} reached)"
    else:
        acc = failed if is_acc else NA
        target = failed if is_acc else NA
    if ok:
        status = "ok"
    else:
        bad = g[g["status"] != "FINISHED"]
        status = f"{bad['status'].iat[0]}: {bad['reason'].iat[0]}" + (f" ({len(bad)}/{n} runs)" if n > 1 else "")
    return {
        "implementation": c["impl"],
        "cell": "accuracy " + str(c["preset"]) if is_acc else "throughput",
        "network": c["network"],
        "dtype": c["dtype"],
        "batch": str(c["batch_size"]),
        "samples/s (median)": _num(med, ",.0f", failed),
        "IQR": (f"{done['samples_per_second_q1'].min():,.0f}-{done['samples_per_second_q3'].max():,.0f}"
                if not done.empty else failed),
        "speed-up": (f"{speedup:.2f}x" if not math.isnan(speedup) else (f"no {speedup_base}" if not done.empty else failed)),
        "% roofline": _num(100 * float(done["roofline_fraction"].median()) if not done.empty else float("nan"), ".3f", failed),
        "roofline peak": roofline_peak_text(c),
        "% shape peak": _num(100 * float(pd.to_numeric(done.get("shape_fraction", pd.Series(dtype=float))).median())
                             if not done.empty else float("nan"), ".1f", failed if done.empty and has_shape_peak(c) else NA),
        "shape peak": shape_peak_text(c),
        "compile s": _num(float(g["compile_seconds"].median()), ".3f", "failed before"),
        "peak RSS MiB": _num(float(pd.to_numeric(g.get("peak_rss_mb", pd.Series(dtype=float))).max()), ",.0f",
                             "not measured"),
        "test acc": acc,
        "time to target s": target,
        "parity max err": _num(float(g["parity_max_error"].max()), ".1e", "failed before"),
        "status": status,
    }


def roofline_peak_text(c) -> str:
    """The peak a cell's "% roofline" divides by, beside it: GFLOP/s, on 1 thread where it was
    (the per-sample implementations), and the probe's spread (max-min over median of
    its repeats); older sessions measured no spread."""
    peak = pd.to_numeric(c.get("peak_gemm_gflops"), errors="coerce")
    if peak is None or pd.isna(peak):
        return NA
    which, spread = c.get("peak_gemm"), pd.to_numeric(c.get("peak_gemm_spread"), errors="coerce")
    text = f"{peak:,.0f} GFLOP/s" + (", 1 thread" if on_one_thread(which) else "")
    if which == GPU_KEY:
        return text + " (GPU)"
    return text + (f", spread {100 * spread:.1f}%" if spread is not None and not pd.isna(spread) else
                   ", spread not measured")


def has_shape_peak(c) -> bool:
    """Whether the cell recorded the shape peak its "% shape peak" divides by (a batch cell on the
    CPU, ``benchmarks/cells.py`` shape_of, of a session that measured one)."""
    peak = pd.to_numeric(c.get("shape_peak_gflops"), errors="coerce")
    return peak is not None and not pd.isna(peak)


def shape_peak_text(c) -> str:
    """The shape peak a cell's "% shape peak" divides by: GFLOP/s of numpy's and torch's best GEMMs at
    the cell's own network, batch and dtype (``benchmarks/shape_peaks.py``); sessions before
    it, per-sample and GPU cells have none."""
    if not has_shape_peak(c):
        return NA
    return f"{float(c['shape_peak_gflops']):,.0f} GFLOP/s, this network at b{int(c['batch_size'])}"


def pytest_benchmark_table(payload: dict) -> pd.DataFrame:
    """pytest-benchmark's JSON as a table: one training step per row, grouped by network (the
    suite times hw1-q4's network, and each family's yardstick its own preset's). Suites run
    before they recorded the network say "not recorded"."""
    rows = []
    for b in (payload or {}).get("benchmarks", []):
        info, stats = b.get("extra_info", {}), b.get("stats", {})
        median, batch = stats.get("median"), info.get("batch", 1)
        rows.append({"preset": info.get("preset", "not recorded"), "network": info.get("network", "not recorded"),
                     "implementation": info.get("impl", b.get("name")), "dtype": info.get("dtype", ""),
                     "batch": batch, "median step ms": f"{1e3 * median:.3f}" if median else NA,
                     "samples/s": f"{batch / median:,.0f}" if median else NA,
                     "IQR %": f"{100 * stats['iqr'] / median:.0f}" if median and "iqr" in stats else NA,
                     "rounds": stats.get("rounds", NA)})
    table = pd.DataFrame(rows)
    return table.sort_values(["preset", "network"], kind="stable").reset_index(drop=True) if rows else table


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table; every header and cell is text, never HTML or table syntax (``reports/text.py``)."""
    lines = ["| " + " | ".join(markdown_text(c) for c in table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return MarkdownBlock("\n".join(lines))


def to_text(table: pd.DataFrame) -> str:
    """A plain, left-aligned terminal table with a rule under the header; one line per row,
    whatever a cell holds (``reports/text.py`` ``one_line``)."""
    cols = [one_line(c) for c in table.columns]
    rows = [[one_line(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max(len(x) for x in [c, *[r[i] for r in rows]]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
