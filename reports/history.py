"""Every cell across sessions, in git order, with its steps found: pure functions from tidy
frames to series, a table of steps, small multiples and a page. ``benchmarks/history.py``
reads the store and git, and writes the files.

Series, one per (mode, cell, schedule, metric): ``samples_per_second`` (each session's median, with its IQR as
the within-session spread; steps are found on its logarithm, so a step is a ratio), ``test_accuracy``
and ``time_to_target_seconds`` (accuracy cells; seeds averaged). Sessions are ordered by their
commit's position in ``git rev-list``, then by start time, never by start time alone.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from reports.page import TEXT, img, page, png
from reports.stats import detect_steps
from reports.text import markdown_page
from reports.tables import to_markdown

# metric -> (on the log scale?, the smallest change worth reporting, in the series' own units)
METRICS = {"samples_per_second": (True, math.log(1.05)),
           "test_accuracy": (False, 0.005),
           "time_to_target_seconds": (True, math.log(1.2))}


def cell_key(row) -> str:
    """A cell across sessions: mode/kind/impl/preset/dtype/batch, and an accuracy cell's schedule
    (``/e1n20000``: epochs, training samples). Seeds are averaged; sessions of two modes or
    schedules are two series, never one."""
    schedule = row.get("schedule") or ""
    return (f"{row.get('mode') or 'unknown'}/{row['kind']}/{row['impl']}/{row['preset']}/{row['dtype']}"
            f"/b{row['batch_size']}" + (f"/{schedule}" if schedule else ""))


def build_series(cells: pd.DataFrame, order: pd.DataFrame) -> pd.DataFrame:
    """Long frame: cell, metric, position (0..), commit, session, value, spread. ``cells``: tidy
    cells with ``session`` (and ``mode``, ``schedule``) columns; ``order``: session, commit in
    the wanted order."""
    done = cells[cells["status"] == "FINISHED"].copy()
    done["key"] = done.apply(cell_key, axis=1) if not done.empty else []
    order = order[["session", "commit"]].reset_index(drop=True).reset_index(names="position")
    done = done.merge(order, on="session")
    rows = []
    for (key, position, commit, session), g in done.groupby(["key", "position", "commit", "session"], sort=True):
        for metric, (log, _) in METRICS.items():
            if metric == "samples_per_second":
                q1, med, q3 = (g[f"samples_per_second_{q}"].astype(float).median() for q in ("q1", "median", "q3"))
                if not (med > 0):
                    continue
                value, spread = math.log(med), (math.log(q3 / q1) if q1 > 0 and q3 > 0 else 0.0)
            else:
                v = g[metric].astype(float).dropna()
                if v.empty or (log and not (v > 0).all()):
                    continue
                value, spread = (float(np.log(v).mean()) if log else float(v.mean())), None
            rows.append({"cell": key, "metric": metric, "position": position, "commit": commit,
                         "session": session, "value": value, "spread": spread})
    return pd.DataFrame(rows, columns=["cell", "metric", "position", "commit", "session", "value", "spread"])


def find_steps(series: pd.DataFrame, sigmas: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per step found: cell, metric, commit (the first after the step), position,
    before, after, change (relative for log-scale metrics, absolute for accuracy), text.
    ``sigmas``: series key -> the noise of one session's log samples/s from a noise profile;
    such a cell's speed steps are judged by it, not by the noise its own series shows."""
    sigmas = sigmas or {}
    rows = []
    for (cell, metric), g in series.groupby(["cell", "metric"], sort=True):
        g = g.sort_values("position")
        log, min_effect = METRICS[metric]
        spreads = g["spread"].dropna().to_numpy(dtype=float) if metric == "samples_per_second" else None
        sigma = sigmas.get(cell) if metric == "samples_per_second" else None
        for step in detect_steps(g["value"].to_numpy(dtype=float), spreads, min_effect=min_effect, sigma=sigma):
            at = g.iloc[step["index"]]
            before, after = step["before"], step["after"]
            if log:
                change, shown = math.exp(after - before) - 1, f"{100 * (math.exp(after - before) - 1):+.0f}%"
                before, after = math.exp(before), math.exp(after)
            else:
                change, shown = after - before, f"{100 * (after - before):+.1f} points"
            rows.append({"cell": cell, "metric": metric, "commit": at["commit"], "position": int(at["position"]),
                         "before": before, "after": after, "change": change,
                         "text": f"{cell} {metric}: {shown} at {str(at['commit'])[:7]}"})
    return pd.DataFrame(rows, columns=["cell", "metric", "commit", "position", "before", "after", "change", "text"])


def small_multiples(series: pd.DataFrame, steps: pd.DataFrame, metric: str):
    """One small plot per cell of ``metric`` across sessions, steps marked in red."""
    from matplotlib.figure import Figure
    log, _ = METRICS[metric]
    cells = sorted(series.loc[series["metric"] == metric, "cell"].unique())
    if not cells:
        return None
    ncols = min(3, len(cells))
    nrows = math.ceil(len(cells) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 2.6 * nrows), layout="constrained")
    for i, cell in enumerate(cells):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        g = series[(series["cell"] == cell) & (series["metric"] == metric)].sort_values("position")
        y = np.exp(g["value"]) if log else g["value"]
        ax.plot(g["position"], y, ".-", lw=0.8, ms=3)
        for _, s in steps[(steps["cell"] == cell) & (steps["metric"] == metric)].iterrows():
            ax.axvline(s["position"] - 0.5, color="tab:red", lw=1)
            ax.annotate(s["text"].rsplit(": ", 1)[1], (s["position"], ax.get_ylim()[1]), color="tab:red",
                        fontsize=7, va="top")
        if log:
            ax.set_yscale("log")
        ax.set_title(cell, fontsize=8)
        ax.set_xlabel("session, in git order", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle(metric.replace("_", " "))
    return fig


def render(series: pd.DataFrame, steps: pd.DataFrame, scope: str,
           calibration: str = "") -> tuple[str, str, dict[str, bytes]]:
    """(markdown, self-contained HTML, {figure name: PNG bytes}); ``calibration``: the line that
    says which cells a noise profile judged."""
    pngs = {}
    for metric in METRICS:
        fig = small_multiples(series, steps, metric)
        if fig is not None:
            pngs[metric] = png(fig, dpi=100)
    sessions = series["session"].nunique()
    table = (steps.assign(**{"step": steps["text"], "median before": steps["before"].map("{:,.4g}".format),
                             "median after": steps["after"].map("{:,.4g}".format)})[["step", "median before", "median after"]]
             if not steps.empty else None)
    md = [f"# backprop-bench history ({scope})", "", f"{sessions} sessions, {series['cell'].nunique()} cells.", "",
          *([calibration, ""] if calibration else []),
          "## Steps", "", to_markdown(table) if table is not None else "no step found", ""]
    md += [f"![{m}](history-{m}.png)" for m in pngs]
    body = [f"<h1>backprop-bench history</h1><p>{html.escape(scope)}: {sessions} sessions, "
            f"{series['cell'].nunique()} cells.</p>" + (f"<p>{html.escape(calibration)}</p>" if calibration else "")
            + "<h2>Steps</h2>",
            table.to_html(index=False, border=0) if table is not None else "<p>no step found</p>"]
    body += [f"<h2>{html.escape(m)}</h2>{img(m, p, style='max-width:100%')}" for m, p in pngs.items()]
    return markdown_page(md), page("backprop-bench history", body, TEXT), pngs
