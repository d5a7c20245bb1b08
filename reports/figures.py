"""Matplotlib figures from the tidy frames. Built on matplotlib.figure.Figure directly: no
pyplot state, no display needed. Every figure has a title, labelled axes with units, and a
log scale where the values span decades."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from reports.tables import with_speedup


def _legend(ax, **kw):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)
    else:
        ax.text(0.5, 0.5, "no finished cells to show", transform=ax.transAxes, ha="center", color="gray")


def _impl_colors(names) -> dict:
    palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def _throughput_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """The bars: each network's throughput cells; on a network the sweep did not cover (only
    numpy-sample's reference cell), its accuracy cells' epochs instead, one bar per
    implementation, dtype and batch (median over seeds)."""
    done = with_speedup(cells)
    done = done[done["status"] == "FINISHED"]
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
                 speedup=("speedup", "median"), flops_per_sample=("flops_per_sample", "first"))
            .reset_index())


def throughput_figure(cells: pd.DataFrame, peaks) -> Figure:
    """One row of panels per network, one panel per dtype: samples/s (log) by implementation
    and batch, IQR error bars, the speed-up over numpy-sample above each bar's error bar, and
    % of that dtype's measured peak GEMM on the right axis. ``peaks``: dtype -> GFLOP/s (a
    number: the float32 peak of sessions that measured only that one)."""
    if not isinstance(peaks, dict):
        peaks = {"float32": float(peaks)}
    rows = _throughput_rows(cells)
    networks = list(dict.fromkeys(rows["network"])) or ["-"]
    dtypes = sorted(rows["dtype"].dropna().unique()) or ["-"]
    colors = dict(zip(sorted(rows["batch_size"].dropna().unique()),
                      ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2"]))
    fig = Figure(figsize=(7.5 * len(dtypes), 5.4 * len(networks)), layout="constrained")
    grid = fig.subplots(len(networks), len(dtypes), squeeze=False)
    for axes, network in zip(grid, networks):
        on_net = rows[rows["network"] == network]
        impls = list(dict.fromkeys(on_net["impl"]))
        batches = sorted(on_net["batch_size"].dropna().unique())
        width = 0.8 / max(len(batches), 1)
        source = on_net["source"].iat[0] if not on_net.empty else ""
        for ax, dtype in zip(axes, dtypes):
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
                for x, top, up in zip(xs, q3, r["speedup"].to_numpy(float)):
                    if np.isfinite(up):      # above the error bar, never across it
                        ax.annotate(f"{up:.3g}x", (x, top), xytext=(0, 2), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=7, rotation=90)
            ax.set_yscale("log")
            ax.set_xticks(range(len(impls)), impls, rotation=20, ha="right")
            ax.set_ylabel("training throughput (samples/s, log)")
            ax.set_title(f"{network}, {dtype} ({source})", fontsize=10)
            lo_lim, hi_lim = ax.get_ylim()
            ax.set_ylim(lo_lim, hi_lim * 6)                       # room for the speed-up labels
            ax.grid(axis="y", which="both", alpha=0.3)
            flops = float(part["flops_per_sample"].dropna().iat[0]) if part["flops_per_sample"].notna().any() else np.nan
            peak = peaks.get(dtype, np.nan)
            if np.isfinite(flops) and np.isfinite(peak) and peak > 0:
                to_pct = lambda s, f=flops, p=peak: s * f / (p * 1e9) * 100  # noqa: E731
                from_pct = lambda q, f=flops, p=peak: q * p * 1e9 / f / 100  # noqa: E731
                sec = ax.secondary_yaxis("right", functions=(to_pct, from_pct))
                spread = peaks.get(f"{dtype}_spread", np.nan)     # issue 13: the probe's spread beside it
                sec.set_ylabel(f"% of measured {dtype} peak GEMM ({peak:.0f} GFLOP/s"
                               + (f", spread {100 * spread:.0f}%" if np.isfinite(spread) else "")
                               + (", multi-thread cells" if f"{dtype}_1thread" in peaks else "") + ")")
            _legend(ax, loc="upper left", fontsize=8, ncol=max(len(batches), 1))
    fig.suptitle("Training throughput: median of repeats, IQR error bars, labels = speed-up over numpy-sample",
                 fontsize=11)
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
        row[1].set_xscale("log")
        row[1].xaxis.set_minor_formatter(NullFormatter())         # minor labels overlap on a short span
        row[1].set_xlabel("cumulative training time (s, log scale; evaluation excluded)")
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
