"""The comparison table: one row per cell, from the tidy cells frame (tracking.CELL_COLUMNS).

Every entry is filled: a number, or a word saying why there is none ("n/a" where the value
does not apply to that kind of cell, "not reached", "failed").
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

BASELINE = "numpy-sample"
NA = "n/a"


def with_speedup(cells: pd.DataFrame) -> pd.DataFrame:
    """Adds ``speedup``: samples/s over numpy-sample's on the same network and dtype, measured
    in the same session (its throughput cell when there is one, else its accuracy cell)."""
    cells = cells.copy()
    base = cells[(cells["impl"] == BASELINE) & (cells["status"] == "FINISHED")]
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


def summary_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Display table (strings), sorted: accuracy cells first, then the throughput sweep."""
    cells = with_speedup(cells)
    cells = cells.assign(_kind=(cells["kind"] != "accuracy").astype(int))
    cells = cells.sort_values(["_kind", "preset", "network", "dtype", "batch_size", "impl"], kind="stable")
    rows = []
    for _, c in cells.iterrows():
        ok = c["status"] == "FINISHED"
        is_acc = c["kind"] == "accuracy"
        failed = "failed" if not ok else NA
        row = {
            "implementation": c["impl"],
            "cell": "accuracy " + str(c["preset"]) if is_acc else "throughput",
            "network": c["network"],
            "dtype": c["dtype"],
            "batch": str(c["batch_size"]),
            "samples/s (median)": _num(c["samples_per_second_median"], ",.0f", failed),
            "IQR": (f"{c['samples_per_second_q1']:,.0f}-{c['samples_per_second_q3']:,.0f}"
                    if ok and not math.isnan(c["samples_per_second_q1"]) else failed),
            "speed-up": _num(c["speedup"], ".2f", failed if not ok else "no baseline") + ("x" if ok and not math.isnan(c["speedup"]) else ""),
            "% roofline": _num(100 * c["roofline_fraction"] if ok else float("nan"), ".3f", failed),
            "compile s": _num(c["compile_seconds"], ".3f", "failed before"),
            "test acc": _num(c["test_accuracy"], ".4f", (failed if not ok else NA) if is_acc else NA),
            "time to target s": (_num(c["time_to_target_seconds"], ".2f",
                                      (f"not reached ({c['target_accuracy']:g})" if ok else failed))
                                 if is_acc else NA),
            "parity max err": _num(c["parity_max_error"], ".1e", "failed before"),
            "status": "ok" if ok else f"{c['status']}: {c['reason']}",
        }
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    def esc(v):
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
