"""Matplotlib figures from the tidy frames. Built on matplotlib.figure.Figure directly: no
pyplot state, no display needed. Every figure has a title, labelled axes with units, and a
log scale where the values span decades."""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, NullFormatter

from reports.tables import with_speedup
from tracking.peaks import GPU_KEY, Peaks, on_one_thread


def _legend(ax, **kw):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)
    else:
        ax.text(0.5, 0.5, "no finished cells to show", transform=ax.transAxes, ha="center", color="gray")


def _impl_colors(names) -> dict:
    palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def _throughput_rows(cells: pd.DataFrame, speedup_base: str) -> pd.DataFrame:
    """The bars: each network's throughput cells; on a network the sweep did not cover (only
    the speed-up base's one cell), its accuracy cells' epochs instead, one bar per
    implementation, dtype and batch (median over seeds), with the fraction of its own peak."""
    done = with_speedup(cells, speedup_base)
    done = done[done["status"] == "FINISHED"]
    for col in ("peak_gemm_gflops", "peak_gemm", "peak_gemm_spread"):   # sessions before per-cell peaks lack them
        if col not in done.columns:
            done = done.assign(**{col: np.nan})
    parts = []
    for _, g in done.groupby("network", sort=False):
        thr = g[g["kind"] == "throughput"]
        part = thr if thr["impl"].nunique() > 1 else g[g["kind"] == "accuracy"]
        parts.append(part.assign(source="throughput cells" if part is thr else "accuracy cells' epochs"))
    if not parts:
        return done.assign(source="")
    rows = pd.concat(parts)
    keys = ["network", "source", "impl", "dtype", "batch_size"]
    return (rows.groupby(keys, sort=False, dropna=False)
            .agg(samples_per_second_median=("samples_per_second_median", "median"),
                 samples_per_second_q1=("samples_per_second_q1", "min"),
                 samples_per_second_q3=("samples_per_second_q3", "max"),
                 speedup=("speedup", "median"), roofline_fraction=("roofline_fraction", "median"),
                 peak_gemm_gflops=("peak_gemm_gflops", "median"), peak_gemm=("peak_gemm", "first"),
                 peak_gemm_spread=("peak_gemm_spread", "median"))
            .reset_index())


def _bar_label(speedup: float, fraction: float) -> str:
    """"16.1x · 12.6%": the speed-up over numpy-sample and the % of the cell's own peak GEMM."""
    parts = []
    if np.isfinite(speedup):
        parts.append(f"{speedup:.3g}x")
    if np.isfinite(fraction):
        parts.append(f"{100 * fraction:.2g}%" if fraction < 0.1 else f"{100 * fraction:.0f}%")
    return " · ".join(parts)


def peak_note(part: pd.DataFrame, dtype: str, peaks: Peaks) -> str:
    """What a panel's percentages divide by: each cell's own measured peak GEMM (on the
    session's threads, on 1 thread for the implementations that run on one, the GPU's for a
    GPU cell), from the cells where they recorded it, else the session's peak for ``dtype``
    (``peaks``, the session's record)."""
    def spread(rows) -> str:
        value = rows["peak_gemm_spread"].median() if "peak_gemm_spread" in rows else np.nan
        return f" (spread {100 * value:.0f}%)" if pd.notna(value) else ""
    known = part.dropna(subset=["peak_gemm_gflops"])
    if known.empty:
        session = peaks.for_cell(dtype, one_thread=False)
        peak, value = session.gflops, session.spread
        return (f"% of the measured {dtype} peak GEMM ({peak:.0f} GFLOP/s"
                + (f", spread {100 * value:.0f}%" if np.isfinite(value) else "") + ")" if np.isfinite(peak)
                else "% of the peak GEMM each cell recorded")
    which = known["peak_gemm"].astype(str)
    gpu, single = which == GPU_KEY, which.map(on_one_thread).astype(bool)
    cpu, many = known[~gpu], known[~gpu & ~single]
    parts = []
    if not cpu.empty and cpu["peak_gemm_gflops"].round().nunique() == 1:     # one probe served every cell
        parts.append(f"{cpu['peak_gemm_gflops'].iat[0]:.0f} GFLOP/s{spread(cpu)}")
    elif not cpu.empty:
        parts.append(f"{many['peak_gemm_gflops'].median():.0f} GFLOP/s{spread(many)} on the session's threads")
        parts.append(f"{known.loc[single, 'peak_gemm_gflops'].median():.0f}{spread(known[single])} on 1 thread "
                     f"({', '.join(dict.fromkeys(known.loc[single, 'impl']))})")
    if gpu.any():
        parts.append(f"{known.loc[gpu, 'peak_gemm_gflops'].median() / 1e3:.1f} TFLOP/s on the GPU "
                     f"({', '.join(dict.fromkeys(known.loc[gpu, 'impl']))})")
    return f"% of the measured {dtype} peak GEMM: " + ", ".join(parts)


def throughput_notes(cells: pd.DataFrame) -> list[str]:
    """What the throughput figure's percentages mean, and every cell above 100% of its peak,
    shown as measured (its FLOPs are the network's GEMMs only, so above 100% the probe read low)."""
    lines = ["% of peak: the cell's samples/s times its network's GEMM FLOPs per sample, over the peak GEMM "
             "measured at the session's start in its dtype: on the session's threads, on 1 thread for the "
             "implementations that run on one (the per-sample ones), the GPU's for a GPU cell. Under each "
             "panel: the peaks its bars divide by."]
    done = cells[(cells["status"] == "FINISHED") & (cells["roofline_fraction"] > 1)]
    for r in done.itertuples():
        peak, spread = getattr(r, "peak_gemm_gflops", np.nan), getattr(r, "peak_gemm_spread", np.nan)
        lines.append(f"above the peak: `{r.cell}` at {100 * r.roofline_fraction:.0f}% of its measured peak GEMM"
                     + (f" ({peak:.0f} GFLOP/s" + (f", probe spread {100 * spread:.0f}%" if pd.notna(spread) else "")
                        + ")" if pd.notna(peak) else "")
                     + ": it ran its GEMMs faster than the probe did, so that probe read low for it")
    return lines


def throughput_figure(cells: pd.DataFrame, peaks: Peaks, speedup_base: str) -> Figure:
    """One row of panels per network, one panel per dtype that has bars: samples/s (log) by
    implementation and batch, IQR error bars, and above each bar's error bar the speed-up over
    numpy-sample and the % of the cell's own measured peak GEMM (``peak_note``). ``peaks``:
    the session's record, what a panel names where its cells did not record their peaks."""
    rows = _throughput_rows(cells, speedup_base)
    networks = list(dict.fromkeys(rows["network"]))
    panels = {n: sorted(rows.loc[rows["network"] == n, "dtype"].dropna().unique()) for n in networks}
    ncols = max([len(d) for d in panels.values()] + [1])
    colors = dict(zip(sorted(rows["batch_size"].dropna().unique()),
                      ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2"]))
    fig = Figure(figsize=(7.5 * ncols, 5.4 * max(len(networks), 1) + 0.6), layout="constrained")
    grid = fig.subplots(max(len(networks), 1), ncols, squeeze=False)
    for axes, network in zip(grid, networks):
        on_net = rows[rows["network"] == network]
        impls = list(dict.fromkeys(on_net["impl"]))
        batches = sorted(on_net["batch_size"].dropna().unique())
        width = 0.8 / max(len(batches), 1)
        source = on_net["source"].iat[0]
        for ax in axes[len(panels[network]):]:
            fig.delaxes(ax)                        # a dtype this network has no bars in: no empty panel
        for ax, dtype in zip(axes, panels[network]):
            part = on_net[on_net["dtype"] == dtype]
            for k, batch in enumerate(batches):
                sel = part[part["batch_size"] == batch].set_index("impl")
                xs = [i - 0.4 + width * (k + 0.5) for i, name in enumerate(impls) if name in sel.index]
                r = sel.reindex([n for n in impls if n in sel.index])
                if r.empty:
                    continue
                med, q1, q3 = (r[c].to_numpy(float) for c in ("samples_per_second_median", "samples_per_second_q1",
                                                                 "samples_per_second_q3"))
                ax.bar(xs, med, width, yerr=[med - q1, q3 - med], capsize=2, color=colors[batch], label=f"batch {batch}")
                for x, top, up, frac in zip(xs, q3, r["speedup"].to_numpy(float), r["roofline_fraction"].to_numpy(float)):
                    ax.annotate(_bar_label(up, frac), (x, top), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7, rotation=90)   # above the error bar
            ax.set_yscale("log")
            lo, hi = (np.log10(v) for v in ax.get_ylim())
            ax.set_ylim(10 ** lo, 10 ** (hi + max(0.3 * (hi - lo), 0.3)))   # a fifth of the panel for the labels
            ax.set_xticks(range(len(impls)), impls, rotation=20, ha="right")
            ax.set_ylabel("training throughput (samples/s, log)")
            ax.set_xlabel(textwrap.fill(peak_note(part, dtype, peaks), 110), fontsize=8)   # one panel wide
            ax.set_title(f"{network}, {dtype} ({source})", fontsize=10)
            ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle("Training throughput: median of repeats, IQR error bars\nabove each bar: speed-up over "
                 f"{speedup_base} · % of the cell's measured peak GEMM", fontsize=11)   # two lines: one panel wide
    if networks:           # one legend for every panel, below them: it covers no bar or label
        handles = {f"batch {b}": Rectangle((0, 0), 1, 1, color=c) for b, c in colors.items()}
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=len(handles), fontsize=9)
    else:
        grid[0][0].text(0.5, 0.5, "no finished cells to show", transform=grid[0][0].transAxes, ha="center",
                        color="gray")
    return fig


def _preset_panels(epochs: pd.DataFrame, ncols: int, height: float = 4.2, width: float = 6.2):
    presets = list(dict.fromkeys(epochs["preset"])) or ["-"]
    fig = Figure(figsize=(width * ncols + 1.5, height * len(presets)), layout="constrained")
    axes = fig.subplots(len(presets), ncols, squeeze=False)
    return fig, presets, axes


def accuracy_figure(epochs: pd.DataFrame, targets: dict) -> Figure:
    """Test accuracy per epoch and against training wall-clock seconds, a line per
    implementation and seed (seeds share their implementation's colour)."""
    fig, presets, axes = _preset_panels(epochs, 2)
    colors = _impl_colors(dict.fromkeys(epochs["impl"]))
    for row, preset in zip(axes, presets):
        part = epochs[epochs["preset"] == preset]
        labelled = set()
        for _, g in part.groupby("cell", sort=False):
            impl = g["impl"].iat[0]
            label = "_nolegend_" if impl in labelled else impl       # one legend entry per impl, not per seed
            labelled.add(impl)
            row[0].plot(g["epoch"], g["test_accuracy"], marker="o", color=colors[impl], label=label)
            row[1].plot(g["train_seconds"], g["test_accuracy"], marker="o", color=colors[impl], label=label)
        for ax in row:
            if preset in targets:
                ax.axhline(targets[preset], color="gray", ls="--", lw=1, label=f"target {targets[preset]:g}")
            ax.set_ylabel("test accuracy (fraction correct)")
            ax.grid(alpha=0.3)
        _legend(row[1], fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))     # outside: covers no line
        row[0].set_xlabel("epoch")
        row[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        row[0].set_title(f"{preset}: test accuracy per epoch", fontsize=10)
        if (part["train_seconds"] > 0).any():       # a session written by another tool may lack the times
            row[1].set_xscale("log")
            row[1].xaxis.set_minor_formatter(NullFormatter())     # minor labels overlap on a short span
            row[1].set_xlabel("cumulative training time (s, log scale; evaluation excluded)")
        else:
            row[1].set_xlabel("cumulative training time: not recorded")
        row[1].set_title(f"{preset}: against training time", fontsize=10)
    return fig


def loss_figure(epochs: pd.DataFrame) -> Figure:
    """Train (solid) and test (dashed) cross-entropy per epoch."""
    fig, presets, axes = _preset_panels(epochs, 1, width=9.0)
    colors = _impl_colors(dict.fromkeys(epochs["impl"]))
    for (ax,), preset in zip(axes, presets):
        labelled = set()
        for _, g in epochs[epochs["preset"] == preset].groupby("cell", sort=False):
            impl = g["impl"].iat[0]
            first = impl not in labelled
            labelled.add(impl)
            ax.plot(g["epoch"], g["train_loss"], marker="o", color=colors[impl],
                    label=f"{impl} train" if first else "_nolegend_")
            ax.plot(g["epoch"], g["test_loss"], marker="s", ls="--", color=colors[impl],
                    label=f"{impl} test" if first else "_nolegend_")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("cross-entropy loss (nats per sample)")
        ax.set_title(f"{preset}: training loss (solid, epoch mean) and test loss (dashed)", fontsize=10)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))     # outside: covers no line
    return fig


def examples_figure(examples: dict, cell: str) -> Figure:
    """The homework's picture: three test images beside the predicted class probabilities."""
    classes = examples["classes"]
    probs = np.asarray(examples["predictions"][cell])
    n = len(examples["images"])
    fig = Figure(figsize=(9, 2.6 * n), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False, width_ratios=[1, 2.4])
    for k in range(n):
        img = np.asarray(examples["images"][k], dtype=np.uint8).reshape(28, 28)
        label = examples["labels"][k]
        axes[k, 0].imshow(img, cmap="gray")
        axes[k, 0].set_title(f"test image #{examples['indices'][k]}: {classes[label]}", fontsize=9)
        axes[k, 0].axis("off")
        colors = ["#59a14f" if c == label else "#4e79a7" for c in range(len(classes))]
        axes[k, 1].barh(range(len(classes)), probs[k], color=colors)
        axes[k, 1].set_yticks(range(len(classes)), classes, fontsize=8)
        axes[k, 1].invert_yaxis()
        axes[k, 1].set_xlim(0, 1)
        axes[k, 1].set_xlabel("predicted probability")
        top = int(np.argmax(probs[k]))
        axes[k, 1].set_title(f"predicted {classes[top]} ({probs[k][top]:.0%}); green = true class", fontsize=9)
    fig.suptitle(f"Predictions of {cell}", fontsize=11)
    return fig
