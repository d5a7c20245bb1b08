"""The tidy frame schema: MLflow's runs -> one row per cell (``CELL_COLUMNS``) and one row per
(accuracy cell, epoch) (``EPOCH_COLUMNS``), the columns that reports and the gate read; the
scaling section's cells apart, one row each (``SCALING_COLUMNS``)."""
from __future__ import annotations

# the per-epoch metrics a cell logs (``epoch/*``, step = epoch)
EPOCH_METRICS = ("train_loss", "test_loss", "test_accuracy", "epoch_seconds", "samples_per_second",
                 "train_seconds")

CELL_COLUMNS = ["run_id", "cell", "kind", "impl", "device", "preset", "dataset", "network", "dtype",
                "batch_size", "seed", "status", "reason", "samples_per_second_median",
                "samples_per_second_q1", "samples_per_second_q3", "roofline_fraction", "shape_fraction",
                "compile_seconds", "test_accuracy", "time_to_target_seconds", "target_accuracy",
                "parity_max_error", "flops_per_sample", "samples_per_second_relative_iqr", "load_average_start",
                "load_average_end", "budget", "peak_gemm_gflops", "peak_gemm", "peak_gemm_spread", "shape_peak_gflops",
                "peak_rss_mb"]
# the scaling section's cells (benchmarks/scaling.py): never among the cells above, so that no
# table, headline, gate or comparison of cells mistakes a case of it for a throughput cell
SCALING_COLUMNS = ["run_id", "cell", "role", "impl", "preset", "network", "dtype", "batch_size", "world_size",
                   "batch_per_rank", "threads", "threads_per_rank", "rounds", "round_samples", "status", "reason",
                   "samples_per_second_median", "samples_per_second_q1", "samples_per_second_q3",
                   "scaling_efficiency", "ddp_overhead", "step_ms_p50", "step_ms_p95", "allreduce_share",
                   "load_average_start", "load_average_end"]
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
        "shape_fraction": col("metrics.shape_fraction"),         # a batch cell on the CPU (benchmarks/shape_peaks.py)
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
        "shape_peak_gflops": pd.to_numeric(col("params.shape_peak_gflops"), errors="coerce"),
        "peak_rss_mb": col("metrics.peak_rss_mb"),
    }, columns=CELL_COLUMNS)
    out = out[out["kind"] != "scaling"].reset_index(drop=True)     # their own frame: ``tidy_scaling``
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


def tidy_scaling(cells):
    """MLflow's cell frame -> the scaling section's cells, one row each (``SCALING_COLUMNS``),
    in the order they were planned (base, 1-rank, then by world size)."""
    import numpy as np
    import pandas as pd

    if cells.empty or "tags.bpb.cell_kind" not in cells.columns:
        return pd.DataFrame(columns=SCALING_COLUMNS)
    mine = cells[cells["tags.bpb.cell_kind"] == "scaling"]
    if mine.empty:
        return pd.DataFrame(columns=SCALING_COLUMNS)

    def col(name, default=np.nan):
        return mine[name] if name in mine.columns else pd.Series(default, index=mine.index)

    def number(name):
        return pd.to_numeric(col(name), errors="coerce")
    out = pd.DataFrame({
        "run_id": col("run_id"), "cell": col("tags.bpb.cell"), "role": col("params.scaling_role"),
        "impl": col("tags.implementation"), "preset": col("params.preset"),
        "network": col("params.sizes").astype(str).str.replace(",", "-") + " " + col("params.activation").astype(str),
        "dtype": col("params.dtype"), "batch_size": number("params.batch_size"),
        "world_size": number("params.world_size").fillna(1), "batch_per_rank": number("params.batch_per_rank"),
        "threads": number("params.threads"), "threads_per_rank": number("params.threads_per_rank"),
        "rounds": number("params.rounds"), "round_samples": number("params.round_samples"),
        "status": col("status"), "reason": col("tags.bpb.failure_reason", None),
        **{k: col(f"metrics.{k}") for k in SCALING_COLUMNS[16:]},
    }, columns=SCALING_COLUMNS)
    # base, 1-rank, then per k: strong, weak, threads-k
    k = (out["threads"] / out["threads_per_rank"]).fillna(out["world_size"])      # ranks, or ranks' worth of threads
    within = out["role"].map({"base": 0, "1-rank": 1, "strong": 2, "weak": 3}).fillna(4)
    return (out.assign(_k=k, _w=within).sort_values(["_k", "_w"], kind="stable")
            .drop(columns=["_k", "_w"]).reset_index(drop=True))
