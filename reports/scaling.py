"""The report's scaling section: torch-ddp at world sizes 1..N against torch-cpu, from the
scaling frame (``tracking.SCALING_COLUMNS``; the measurement is benchmarks/scaling.py).

Every sentence is computed from the rows it names; a case that failed or is missing makes its
sentence say so instead of a figure.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

TITLE = "Scaling: data parallelism with torch-ddp"
FIGURE_TITLE = "Scaling: samples/s and efficiency by world size"


def _done(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "FINISHED"]


def _one(frame: pd.DataFrame, role: str, world: int | None = None) -> pd.Series | None:
    rows = _done(frame)
    rows = rows[rows["role"] == role]
    if world is not None:
        rows = rows[rows["world_size"] == world]
    return rows.iloc[0] if not rows.empty else None


def _rate(row) -> str:
    return f"{row['samples_per_second_median']:,.0f} samples/s"


def failures(frame: pd.DataFrame) -> list[str]:
    """One line per case that did not finish, for the report's flags."""
    return [f"{r.status}: {r.cell}: {r.reason}" for r in frame.itertuples() if r.status != "FINISHED"]


def sentences(frame: pd.DataFrame) -> list[str]:
    """What the section says, each figure from its rows; the last line introduces the table."""
    first = frame.iloc[0]
    world = int(frame["world_size"].max())
    per_rank = int(first["threads_per_rank"]) if not math.isnan(first["threads_per_rank"]) else "?"
    rank_threads = f"{per_rank} thread" + ("" if per_rank == 1 else "s")
    starts, ends = frame["load_average_start"].dropna(), frame["load_average_end"].dropna()
    load = (f"load average {starts.iloc[0]:.2f} before the rounds, {ends.iloc[0]:.2f} after"
            if len(starts) and len(ends) else "load average not recorded")
    lines = [f"torch-ddp (gloo, one process per rank) on {first['network']}, {first['dtype']}, global batch "
             f"{int(first['batch_size'])}; {rank_threads} per rank, world sizes 1 to {world}; every case "
             f"timed in the same {int(first['rounds'])} interleaved rounds of {int(first['round_samples']):,} "
             f"samples (median shown); {load}."]
    base, one = _one(frame, "base"), _one(frame, "1-rank")
    if base is not None and one is not None:
        lines.append(f"DDP's overhead: 1 rank runs at {one['ddp_overhead']:.2f}x torch-cpu on the same "
                     f"{rank_threads} ({_rate(one)} against {_rate(base)}).")
    else:
        lines.append("DDP's overhead: not measured (a case failed; see Flags).")
    for k in range(2, world + 1):
        strong, weak, threads = _one(frame, "strong", k), _one(frame, "weak", k), _one(frame, f"threads-{k}")
        parts = []
        if strong is not None:
            parts.append(f"strong scaling efficiency {strong['scaling_efficiency']:.2f} ({_rate(strong)}, "
                         f"{int(strong['batch_per_rank'])} per rank), the all-reduce {strong['allreduce_share']:.0%} "
                         f"of a step")
        if weak is not None:
            parts.append(f"weak scaling efficiency {weak['scaling_efficiency']:.2f} ({_rate(weak)} at global batch "
                         f"{int(weak['batch_size'])}), the all-reduce {weak['allreduce_share']:.0%} of a step")
        lines.append(f"{k} ranks: " + ("; ".join(parts) if parts else "not measured (see Flags)") + ".")
        if strong is not None and threads is not None:
            faster = strong["samples_per_second_median"] > threads["samples_per_second_median"]
            lines.append(f"The same {int(threads['threads'])} cores as threads in one torch-cpu process: "
                         f"{_rate(threads)} (efficiency {threads['scaling_efficiency']:.2f} against {k} x torch-cpu on one "
                         f"rank's {rank_threads}); "
                         f"{k} ranks at the same global batch are {'faster' if faster else 'slower'}, "
                         f"{strong['samples_per_second_median'] / threads['samples_per_second_median']:.2f}x.")
    lines.append("Efficiency is throughput(k) / (k x throughput(1)): strong keeps the global batch (each rank "
                 "trains batch/k), weak keeps the batch per rank; for threads, k x torch-cpu on one rank's share "
                 "of the threads. Step times are per rank, over every step of every round; the all-reduce "
                 "share is the gradients' all-reduce, launch to completion, over the steps' time. A case is "
                 "timed only after it passes the parity check against the float64 reference.")
    return lines


def table(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in frame.itertuples():
        ok = r.status == "FINISHED"

        def num(v, fmt):
            return fmt.format(v) if ok and isinstance(v, (int, float)) and not math.isnan(v) else "-"
        rows.append({
            "case": r.role, "implementation": r.impl, "ranks": f"{int(r.world_size)}",
            "threads": num(r.threads, "{:.0f}"), "global batch": f"{int(r.batch_size)}",
            "batch per rank": num(r.batch_per_rank, "{:.0f}"),
            "samples/s (median)": num(r.samples_per_second_median, "{:,.0f}") if ok else r.status,
            "IQR": (f"{r.samples_per_second_q1:,.0f}-{r.samples_per_second_q3:,.0f}" if ok else "-"),
            "efficiency": (num(r.scaling_efficiency, "{:.2f}") if r.role not in ("base", "1-rank")
                           else num(r.ddp_overhead, "DDP overhead {:.2f}x") if r.role == "1-rank" else "-"),
            "step p50 / p95 ms (slowest rank)": (f"{r.step_ms_p50:.2f} / {r.step_ms_p95:.2f}"
                                                 if ok and not math.isnan(r.step_ms_p50) else "-"),
            "all-reduce share": num(r.allreduce_share, "{:.0%}"),
        })
    return pd.DataFrame(rows)


def scaling_section(frame: pd.DataFrame) -> tuple[str, list[str], pd.DataFrame] | None:
    """(title, sentences, table) for the report, or None when the session has no scaling cells."""
    if frame is None or frame.empty:
        return None
    return TITLE, [*sentences(frame), "The cases, in the order planned:"], table(frame)


def scaling_figure(frame: pd.DataFrame) -> Figure | None:
    """Left: samples/s by world size, strong and weak, with the ideal (k x 1 rank) and torch-cpu
    on the same cores as threads; right: the efficiency of each."""
    done = _done(frame)
    one = _one(frame, "1-rank")
    if done.empty or one is None:
        return None
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    ones = one["samples_per_second_median"]
    base = _one(frame, "base")
    threads = done[done["role"].str.startswith("threads-")]
    thread_k = (threads["threads"] / threads["threads_per_rank"]).round().astype(int)   # the ranks' worth of threads
    styles = {"strong": ("#4e79a7", "o"), "weak": ("#f28e2b", "s")}
    for role, (color, marker) in styles.items():
        part = done[done["role"] == role].sort_values("world_size")
        ks = [1, *part["world_size"].astype(int)]
        rates = [ones, *part["samples_per_second_median"]]
        left.plot(ks, rates, marker=marker, color=color, label=f"torch-ddp, {role} scaling")
        right.plot(ks, [1.0, *part["scaling_efficiency"]], marker=marker, color=color, label=f"{role} scaling")
    ks = np.arange(1, int(done["world_size"].max()) + 1)
    left.plot(ks, ks * ones, ls="--", color="gray", label="ideal: k x 1 rank")
    if base is not None and not threads.empty:
        left.plot([1, *thread_k], [base["samples_per_second_median"], *threads["samples_per_second_median"]],
                  marker="^", color="#59a14f", label="torch-cpu, the same cores as threads")
        right.plot([1, *thread_k], [1.0, *threads["scaling_efficiency"]], marker="^", color="#59a14f",
                   label="threads (torch-cpu)")
    for ax in (left, right):
        ax.set_xticks(ks)
        ax.set_xlabel("world size k (ranks; for threads, k x one rank's threads)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("samples/s (median of the rounds)")
    left.set_ylim(bottom=0)
    right.set_ylabel("efficiency: throughput(k) / (k x throughput(1))")
    right.set_ylim(0, 1.1)
    right.axhline(1.0, ls="--", color="gray", lw=0.8)
    b = int(one["batch_size"])
    fig.suptitle(f"torch-ddp on {one['network']}, {one['dtype']}: strong at global batch {b}, weak at {b} per rank")
    return fig
