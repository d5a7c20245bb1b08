"""Machines side by side: one session per machine, cell by cell (``report --session A
--session B`` or ``report --latest-per-machine``).

Input: the tidy cells of every session (``tracking.CELL_COLUMNS``) with two more columns,
``machine`` (its label) and ``session`` (its run id). Each machine is measured against itself:
% of its own peak GEMM, speed-up over its own numpy-sample. Accuracy is compared *across*
machines: the same cell (same implementation, configuration and seed) should give the same
accuracy everywhere, so any machine beyond the parity tolerance of the cell's dtype is flagged:
a different numeric result is a finding, not noise.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.page import NUMBERS, TABLE, TEXT, WIDE, img, page, png
from reports.text import markdown_page
from reports.tables import NA, to_markdown, with_speedup

TITLE = "Throughput per implementation and machine (each machine's fastest batch size)"


def _per_session(cells: pd.DataFrame, speedup_base: str) -> pd.DataFrame:
    """``speedup`` over ``speedup_base`` (numpy-sample) computed inside each session (each machine against itself)."""
    parts = [with_speedup(g, speedup_base) for _, g in cells.groupby("session", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else cells.assign(speedup=np.nan)


def accuracy_verdicts(cells: pd.DataFrame, tolerance: dict[str, float]) -> dict[tuple[str, str], str]:
    """(cell, machine) -> "agrees", "DIFFERS (...)" or "only machine", for finished accuracy
    cells. The value to agree with is the one most machines share (ties: the first machine's)."""
    out = {}
    done = cells[(cells["kind"] == "accuracy") & (cells["status"] == "FINISHED")]
    for cell, g in done.groupby("cell", sort=False):
        if len(g) == 1:
            out[cell, g["machine"].iat[0]] = "only machine"
            continue
        values = g["test_accuracy"].astype(float).tolist()
        tol = tolerance.get(str(g["dtype"].iat[0]), 0.0)

        def close(a, b):
            return abs(a - b) <= tol * max(abs(a), abs(b))
        ref = max(values, key=lambda v: sum(close(v, w) for w in values))   # first of the largest group
        for machine, value in zip(g["machine"], values):
            out[cell, machine] = ("agrees" if close(value, ref) else
                                  f"DIFFERS: {value:.4f} vs {ref:.4f} on the others (beyond {tol:g} relative)")
    return out


def machines_table(cells: pd.DataFrame, tolerance: dict[str, float], speedup_base: str) -> pd.DataFrame:
    """Display table (strings): one row per cell and machine, cells in the order first seen,
    machines in the order given; a cell a machine did not run says so."""
    cells = _per_session(cells, speedup_base)
    verdicts = accuracy_verdicts(cells, tolerance)
    machines = list(dict.fromkeys(cells["machine"]))
    rows = []
    for cell in dict.fromkeys(cells["cell"]):
        here = cells[cells["cell"] == cell].set_index("machine")
        for machine in machines:
            if machine not in here.index:
                rows.append({"cell": cell, "machine": machine, "samples/s": "not run", "% of own peak": NA,
                             "speed-up over own numpy-sample": NA, "test acc": NA, "accuracy across machines": NA,
                             "status": "not in this machine's session"})
                continue
            r = here.loc[[machine]].iloc[0]
            ok = r["status"] == "FINISHED"
            acc = float(r["test_accuracy"]) if r["kind"] == "accuracy" and ok else float("nan")
            rows.append({
                "cell": cell, "machine": machine,
                "samples/s": f"{r['samples_per_second_median']:,.0f}" if ok else "failed",
                "% of own peak": f"{100 * r['roofline_fraction']:.3f}" if ok else "failed",
                "speed-up over own numpy-sample": (f"{r['speedup']:.2f}x" if ok and not math.isnan(r["speedup"])
                                                   else (f"no {speedup_base}" if ok else "failed")),
                "test acc": f"{acc:.4f}" if not math.isnan(acc) else NA,
                "accuracy across machines": verdicts.get((cell, machine), NA),
                "status": "ok" if ok else f"{r['status']}: {r['reason']}",
            })
    return pd.DataFrame(rows)


def machines_figure(cells: pd.DataFrame) -> Figure:
    """One panel per dtype; one group of bars per implementation, one bar per machine: the
    machine's fastest throughput cell for that implementation (log scale, batch size above)."""
    sweep = cells[(cells["kind"] == "throughput") & (cells["status"] == "FINISHED")]
    network = sweep["network"].mode().iat[0] if not sweep.empty else ""
    sweep = sweep[sweep["network"] == network]
    dtypes = sorted(sweep["dtype"].unique()) or ["-"]
    impls = list(dict.fromkeys(sweep["impl"]))
    machines = list(dict.fromkeys(cells["machine"]))
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"]
    fig = Figure(figsize=(max(6.5, 1.2 * len(impls) * max(len(machines), 2) / 2) * len(dtypes), 5.2),
                 layout="constrained")
    axes = fig.subplots(1, len(dtypes), squeeze=False)[0]
    width = 0.8 / max(len(machines), 1)
    for ax, dtype in zip(axes, dtypes):
        part = sweep[sweep["dtype"] == dtype]
        for k, machine in enumerate(machines):
            best = (part[part["machine"] == machine].sort_values("samples_per_second_median")
                    .drop_duplicates("impl", keep="last").set_index("impl"))
            xs = [i - 0.4 + width * (k + 0.5) for i, n in enumerate(impls) if n in best.index]
            ys = [best.loc[n, "samples_per_second_median"] for n in impls if n in best.index]
            labels = [f"b{best.loc[n, 'batch_size']}" for n in impls if n in best.index]
            ax.bar(xs, ys, width, color=palette[k % len(palette)], label=machine)
            for x, y, text in zip(xs, ys, labels):
                ax.annotate(text, (x, y), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=7, rotation=90)
        if ax.get_legend_handles_labels()[0]:
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi * 3)                 # room for the batch labels
            ax.legend(title="machine", fontsize=8, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no finished throughput cells", transform=ax.transAxes, ha="center", color="gray")
        ax.set_xticks(range(len(impls)), impls, rotation=20, ha="right")
        ax.set_xlabel("implementation")
        ax.set_ylabel("training throughput (samples/s, log scale)")
        ax.set_title(dtype)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle(f"{TITLE}\nnetwork {network}, median of repeats, log scale", fontsize=10)
    return fig


def write_machines_report(cells: pd.DataFrame, sessions: pd.DataFrame, tolerance: dict[str, float],
                          out_dir: str | Path, speedup_base: str) -> tuple[dict[str, Path], pd.DataFrame]:
    """machines.md, machines.html (self-contained) and machines.png into ``out_dir``; returns
    their paths and the table.
    ``sessions``: one row per machine with columns machine, session, mode, started, peak_gemm_gflops, cpu, gpu."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = machines_table(cells, tolerance, speedup_base)
    figure = png(machines_figure(cells))
    paths = {"figure": out / "machines.png"}
    paths["figure"].write_bytes(figure)
    facts = [f"{r.machine}: session `{r.session}` ({r.mode}, {r.started}), CPU {r.cpu}, GPU {r.gpu}, "
             f"peak float32 GEMM {float(r.peak_gemm_gflops):.0f} GFLOP/s" for r in sessions.itertuples()]
    differs = int(table["accuracy across machines"].str.startswith("DIFFERS").sum())
    facts.append(f"accuracy: {differs} machine-cell(s) differ from the others beyond the parity tolerance"
                 if differs else "accuracy: every cell agrees across the machines that ran it")
    paths["markdown"] = out / "machines.md"
    paths["markdown"].write_text(markdown_page(["# backprop-bench: machines side by side", "",
                                            *[f"- {f}" for f in facts], "", "## Cells", "", to_markdown(table), "",
                                            f"## {TITLE}", "", "![machines](machines.png)", ""]))
    body = ["<h1>backprop-bench: machines side by side</h1><ul>",
            *[f"<li>{html.escape(f)}</li>" for f in facts], "</ul><h2>Cells</h2>",
            table.to_html(index=False, escape=True, border=0, classes="cells"),
            f"<h2>{html.escape(TITLE)}</h2>{img(TITLE, figure)}"]
    paths["html"] = out / "machines.html"
    paths["html"].write_text(page("backprop-bench: machines", body, TEXT + TABLE + NUMBERS + WIDE))
    return paths, table
