"""The tidy frame schema: MLflow's runs -> one row per cell (``CELL_COLUMNS``) and one row per
(accuracy cell, epoch) (``EPOCH_COLUMNS``), the columns that reports and the gate read."""
from __future__ import annotations

# the per-epoch metrics a cell logs (``epoch/*``, step = epoch)
EPOCH_METRICS = ("train_loss", "test_loss", "test_accuracy", "epoch_seconds", "samples_per_second",
                 "train_seconds")

CELL_COLUMNS = ["run_id", "cell", "kind", "impl", "device", "preset", "dataset", "network", "dtype",
                "batch_size", "seed", "status", "reason", "samples_per_second_median",
                "samples_per_second_q1", "samples_per_second_q3", "roofline_fraction",
                "compile_seconds", "test_accuracy", "time_to_target_seconds", "target_accuracy",
                "parity_max_error", "flops_per_sample", "samples_per_second_relative_iqr", "load_average_start",
                "load_average_end", "budget", "peak_gemm_gflops", "peak_gemm", "peak_gemm_spread", "peak_rss_mb"]
EPOCH_COLUMNS = ["run_id", "cell", "impl", "preset", "dtype", "batch_size", "seed", "epoch",
                 *EPOCH_METRICS]


def tidy(cells, epochs):
    """MLflow's frames -> (cells, epochs) with the fixed columns above, one row per cell and
    one row per (accuracy cell, epoch)."""
    import numpy as np
    import pandas as pd

    def col(name, default=np.nan):
        return cells[name] if name in cells.columns else pd.Series(default, index=cells.index)

    out = pd.DataFrame({
        "run_id": col("run_id"),
        "cell": col("tags.bpb.cell"),
        "kind": col("tags.bpb.cell_kind"),
        "impl": col("tags.implementation"),
        "device": col("tags.device"),
        "preset": col("params.preset"),
        "dataset": col("params.dataset"),
        "network": col("params.sizes").astype(str).str.replace(",", "-") + " " + col("params.activation").astype(str),
        "dtype": col("params.dtype"),
        "batch_size": pd.to_numeric(col("params.batch_size"), errors="coerce").astype("Int64"),
        "seed": pd.to_numeric(col("params.seed"), errors="coerce").astype("Int64"),
        "status": col("status"),
        "reason": col("tags.bpb.failure_reason", None),
        "samples_per_second_median": col("metrics.samples_per_second_median"),
        "samples_per_second_q1": col("metrics.samples_per_second_q1"),
        "samples_per_second_q3": col("metrics.samples_per_second_q3"),
        "roofline_fraction": col("metrics.roofline_fraction"),
        "compile_seconds": col("metrics.compile_seconds"),
        "test_accuracy": col("metrics.test_accuracy"),
        "time_to_target_seconds": col("metrics.time_to_target_seconds"),
        "target_accuracy": pd.to_numeric(col("params.target_accuracy"), errors="coerce"),
        "parity_max_error": col("metrics.parity_max_error"),
        # constants are params now; older sessions logged them as metrics
        "flops_per_sample": pd.to_numeric(col("params.flops_per_sample"), errors="coerce").fillna(
            col("metrics.flops_per_sample")),
        "samples_per_second_relative_iqr": col("metrics.samples_per_second_relative_iqr"),
        "load_average_start": col("metrics.load_average_start"),
        "load_average_end": col("metrics.load_average_end"),
        "budget": col("tags.bpb.budget", None),
        "peak_gemm_gflops": pd.to_numeric(col("params.peak_gemm_gflops"), errors="coerce").fillna(
            col("metrics.peak_gemm_gflops")),
        "peak_gemm": col("params.peak_gemm", None),                # which peak, its spread
        "peak_gemm_spread": pd.to_numeric(col("params.peak_gemm_spread"), errors="coerce"),
        "peak_rss_mb": col("metrics.peak_rss_mb"),
    }, columns=CELL_COLUMNS).reset_index(drop=True)
    if epochs.empty or out.empty:
        return out, pd.DataFrame(columns=EPOCH_COLUMNS)
    accuracy_ids = set(out.loc[out["kind"] == "accuracy", "run_id"])
    long = epochs[epochs["run_id"].isin(accuracy_ids)]
    wide = long.pivot_table(index=["run_id", "step"], columns="key", values="value", aggfunc="last").reset_index()
    wide = wide.rename(columns={"step": "epoch"})
    meta = out[["run_id", "cell", "impl", "preset", "dtype", "batch_size", "seed"]]
    merged = meta.merge(wide, on="run_id")
    for key in EPOCH_METRICS:
        if key not in merged.columns:
            merged[key] = np.nan
    return out, merged[EPOCH_COLUMNS].sort_values(["cell", "epoch"]).reset_index(drop=True)
