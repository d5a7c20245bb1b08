"""Matplotlib figures from the tidy frames. Built on matplotlib.figure.Figure directly: no
pyplot state, no display needed. Every figure has a title, labelled axes with units, and a
log scale where the values span decades."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports.tables import with_speedup


def _legend(ax, **kw):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)
    else:
        ax.text(0.5, 0.5, "no finished cells to show", transform=ax.transAxes, ha="center", color="gray")


def _impl_colors(names) -> dict:
    palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def throughput_figure(cells: pd.DataFrame, peak_gflops: float) -> Figure:
    """Grouped bars per dtype panel: samples/s (log) by implementation and batch, IQR error
    bars, speed-up over numpy-sample above each bar, % of peak GEMM on the right axis."""
    sweep = with_speedup(cells)
    sweep = sweep[(sweep["kind"] == "throughput") & (sweep["status"] == "FINISHED")]
    network = sweep["network"].mode().iat[0] if not sweep.empty else ""
    sweep = sweep[sweep["network"] == network]
    dtypes = sorted(sweep["dtype"].unique()) or ["-"]
    impls = list(dict.fromkeys(sweep["impl"]))
    batches = sorted(sweep["batch_size"].dropna().unique())
    fig = Figure(figsize=(6.5 * len(dtypes), 5.2), layout="constrained")
    axes = fig.subplots(1, len(dtypes), squeeze=False)[0]
    colors = dict(zip(batches, ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2"]))
    width = 0.8 / max(len(batches), 1)
    flops = float(sweep["flops_per_sample"].iat[0]) if not sweep.empty else np.nan
    for ax, dtype in zip(axes, dtypes):
        part = sweep[sweep["dtype"] == dtype]
        for k, batch in enumerate(batches):
            rows = part[part["batch_size"] == batch].set_index("impl")
            xs, ys, lo, hi, ups = [], [], [], [], []
            for i, name in enumerate(impls):
                if name in rows.index:
                    r = rows.loc[name]
                    xs.append(i - 0.4 + width * (k + 0.5))
                    ys.append(r["samples_per_second_median"])
                    lo.append(r["samples_per_second_median"] - r["samples_per_second_q1"])
                    hi.append(r["samples_per_second_q3"] - r["samples_per_second_median"])
                    ups.append(r["speedup"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=colors[batch], label=f"batch {batch}")
            for x, y, up in zip(xs, ys, ups):
                if np.isfinite(up):
                    ax.annotate(f"{up:.3g}x", (x, y), xytext=(0, 3), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_yscale("log")
        ax.set_xticks(range(len(impls)), impls, rotation=20, ha="right")
        ax.set_ylabel("training throughput (samples/s, log scale)")
        ax.set_xlabel("implementation")
        ax.set_title(dtype)
        lo_lim, hi_lim = ax.get_ylim()
        ax.set_ylim(lo_lim, hi_lim * 4)                       # room for the speed-up labels
        ax.grid(axis="y", which="both", alpha=0.3)
        if np.isfinite(flops) and peak_gflops > 0:
            to_pct = lambda s: s * flops / (peak_gflops * 1e9) * 100  # noqa: E731
            from_pct = lambda p: p * peak_gflops * 1e9 / flops / 100  # noqa: E731
            sec = ax.secondary_yaxis("right", functions=(to_pct, from_pct))
            sec.set_ylabel(f"% of peak float32 GEMM ({peak_gflops:.0f} GFLOP/s)")
        _legend(ax, loc="upper left", fontsize=8)
    fig.suptitle(f"Throughput sweep on {network}: median of repeats, IQR error bars, "
                 "labels = speed-up over numpy-sample", fontsize=11)
    return fig


def _preset_panels(epochs: pd.DataFrame, ncols: int, height: float = 4.2):
    presets = list(dict.fromkeys(epochs["preset"])) or ["-"]
    fig = Figure(figsize=(6.2 * ncols, height * len(presets)), layout="constrained")
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
            _legend(ax, fontsize=8)
        row[0].set_xlabel("epoch")
        row[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        row[0].set_title(f"{preset}: test accuracy per epoch")
        row[1].set_xscale("log")
        row[1].set_xlabel("cumulative training time (s, log scale; evaluation excluded)")
        row[1].set_title(f"{preset}: test accuracy against wall-clock training time")
    return fig


def loss_figure(epochs: pd.DataFrame) -> Figure:
    """Train (solid) and test (dashed) cross-entropy per epoch."""
    fig, presets, axes = _preset_panels(epochs, 1)
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
        ax.set_title(f"{preset}: training loss (solid, mean over the epoch) and test loss (dashed)")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8, ncol=2)
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
