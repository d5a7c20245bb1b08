"""The GPU check's table (``python -m benchmarks gpu-check``, docs/gpu.md): one row per
implementation, from a session's tidy cells frame (``tracking.CELL_COLUMNS``) joined with the
GPU columns ``gpu_columns`` reads from MLflow's frame.

Every entry is a number or says why there is none, as in ``reports/tables.py``.
"""
from __future__ import annotations

import math

import pandas as pd

NA = "n/a"
EPOCH_SAMPLES = 60000      # an hw1-q3 epoch: the whole Fashion-MNIST training set
# what the table reads beyond the tidy columns: name here -> MLflow's column
GPU_COLUMNS = {
    "peak_device_memory_bytes": "metrics.peak_device_memory_bytes",
    "energy_joules_per_epoch": "metrics.energy_joules_per_epoch",
    "capture_seconds": "metrics.impl_capture_seconds",
    "energy_note": "tags.bpb.energy",
    "roofline_peak": "tags.bpb.roofline_peak",
    "optimizer_kernel": "tags.impl.optimizer_kernel",
}


def gpu_columns(raw_cells: pd.DataFrame) -> pd.DataFrame:
    """``run_id`` and the GPU_COLUMNS of MLflow's cells frame (missing ones empty)."""
    out = pd.DataFrame({"run_id": raw_cells["run_id"]})
    for name, col in GPU_COLUMNS.items():
        out[name] = raw_cells[col] if col in raw_cells.columns else None
    return out


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _fmt(v, fmt: str, why: str = NA) -> str:
    return why if _missing(v) else format(v, fmt)


def gpu_table(cells: pd.DataFrame, impl_order, tolerance: dict[str, float],
              skipped: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per implementation in ``impl_order``: parity, hw1-q3 epoch time (float32, batch
    256, from the throughput cell's samples/s), % of the peak it is measured against, peak
    device memory, joules per epoch, compile (capture) seconds, status (``skipped``: why an
    implementation has no cells)."""
    rows = []
    for impl in impl_order:
        mine = cells[cells["impl"] == impl]
        thr = mine[(mine["kind"] == "throughput") & (mine["preset"] == "hw1-q3") & (mine["dtype"] == "float32")
                   & (mine["batch_size"] == 256)]
        row = _row(impl, mine, thr.iloc[0] if len(thr) else None, tolerance)
        if mine.empty and (skipped or {}).get(impl):
            row["status"] = f"skipped: {skipped[impl]}"
        rows.append(row)
    return pd.DataFrame(rows)


def _parity(mine: pd.DataFrame, tolerance: dict[str, float]) -> str:
    parts = []
    for dtype in ("float32", "float64"):
        errs = mine.loc[mine["dtype"] == dtype, "parity_max_error"].astype(float).dropna()
        if len(errs):
            worst = errs.max()
            parts.append(f"{dtype} {worst:.1e} " + ("ok" if worst <= tolerance[dtype] else f"FAIL > {tolerance[dtype]:g}"))
    return "; ".join(parts) or "not measured"


def _row(impl: str, mine: pd.DataFrame, c, tolerance) -> dict:
    bad = mine[mine["status"] != "FINISHED"]
    status = "ok" if bad.empty else f"{len(bad)} of {len(mine)} cells {bad['status'].iat[0]}: {bad['reason'].iat[0]}"
    if mine.empty:
        status = "no cells (skipped or not run)"
    row = {"implementation": impl, "device": mine["device"].iat[0] if len(mine) else NA,
           "parity (one step vs float64 reference)": _parity(mine, tolerance)}
    if c is None or c["status"] != "FINISHED":
        why = "no hw1-q3 float32 b256 throughput cell" if c is None else f"cell {c['status']}"
        return {**row, "hw1-q3 epoch ms (IQR)": why, "% of peak": why, "peak device memory": why,
                "J/epoch": why, "compile s": _fmt(None if c is None else c["compile_seconds"], ".2f"), "status": status}
    ms = 1e3 * EPOCH_SAMPLES / c["samples_per_second_median"]
    slow, fast = (1e3 * EPOCH_SAMPLES / c[k] for k in ("samples_per_second_q1", "samples_per_second_q3"))
    on_gpu = c["device"] == "cuda"
    peak, mem, joules = c.get("roofline_peak"), c.get("peak_device_memory_bytes"), c.get("energy_joules_per_epoch")
    compile_s = _fmt(c["compile_seconds"], ".2f")
    if not _missing(c.get("capture_seconds")):
        compile_s += f" (capture {c['capture_seconds']:.3f})"
    return {**row,
            "hw1-q3 epoch ms (IQR)": f"{ms:.2f} ({fast:.2f}-{slow:.2f})",
            "% of peak": _fmt(100 * c["roofline_fraction"], ".2f") + ("" if _missing(peak) else f"% of {peak}"),
            "peak device memory": (f"{NA} (CPU)" if not on_gpu else
                                   f"{NA}: not recorded" if _missing(mem) else f"{mem / 2 ** 20:.0f} MiB"),
            "J/epoch": (f"{NA} (CPU)" if not on_gpu else
                        _fmt(joules, ".2f", str(c.get("energy_note") or f"{NA}: not recorded"))),
            "compile s": compile_s, "status": status}


def epoch_ms(cells: pd.DataFrame, impl: str) -> float:
    """hw1-q3 epoch milliseconds of ``impl`` (float32, batch 256), NaN without that cell."""
    c = cells[(cells["impl"] == impl) & (cells["kind"] == "throughput") & (cells["preset"] == "hw1-q3")
              & (cells["dtype"] == "float32") & (cells["batch_size"] == 256) & (cells["status"] == "FINISHED")]
    return float(1e3 * EPOCH_SAMPLES / c["samples_per_second_median"].iloc[0]) if len(c) else float("nan")
