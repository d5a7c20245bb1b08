"""The report of one session: ``write_report`` writes report.md, a self-contained
report.html and one PNG per figure into one folder (inputs: see ``reports/__init__.py``)."""
from __future__ import annotations

import html
import math
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from reports import answer
from reports.page import NUMBERS, TABLE, TEXT, WIDE, img, page, png
from reports.figures import accuracy_figure, examples_figure, loss_figure, throughput_figure, throughput_notes
from reports.peers import peers_section
from reports.scaling import FIGURE_TITLE as SCALING_FIGURE, failures as scaling_failures, scaling_figure, scaling_section
from reports.text import markdown_page
from reports.tables import pytest_benchmark_table, summary_table, to_markdown
from tracking.peaks import NAN, Peaks

FIGURES = {
    "throughput": "Throughput: speed-up over numpy-sample and % of the machine's peak",
    "accuracy": "Test accuracy per epoch and against wall-clock training time",
    "loss": "Training and test loss",
    "examples": "Three test images and their predicted class probabilities",
    "scaling": SCALING_FIGURE,
}


def best_example_cell(examples: dict, cells: pd.DataFrame) -> str | None:
    preds = examples.get("predictions", {}) if examples else {}
    if not preds:
        return None
    acc = examples.get("accuracy", {})
    return max(preds, key=lambda c: (acc.get(c) or 0.0, c))


def build_figures(cells: pd.DataFrame, epochs: pd.DataFrame, examples: dict, peaks: Peaks, speedup_base: str,
                  scaling: pd.DataFrame | None = None) -> dict:
    targets = (cells[cells["kind"] == "accuracy"].dropna(subset=["target_accuracy"])
               .groupby("preset")["target_accuracy"].first().to_dict())
    figs = {"throughput": throughput_figure(cells, peaks, speedup_base),
            "accuracy": accuracy_figure(epochs, targets),
            "loss": loss_figure(epochs)}
    cell = best_example_cell(examples, cells)
    if cell:
        figs["examples"] = examples_figure(examples, cell)
    fig = scaling_figure(scaling) if scaling is not None and not scaling.empty else None
    if fig is not None:
        figs["scaling"] = fig
    return figs


def _facts(meta: dict, peaks: Peaks) -> list[str]:
    machine = meta.get("machine", {})
    start = peaks.gflops() or {"float32": NAN}
    return [
        f"session run `{meta.get('run_id', '?')}` ({meta.get('mode', '?')}), dataset {meta.get('dataset', '?')}",
        f"CPU {machine.get('cpu_model', '?')} ({machine.get('cpu_cores', '?')} cores), GPU {machine.get('gpu', '?')}",
        f"BLAS {machine.get('blas', '?')}; {machine.get('openblas_env', '')}",
        ("GEMM rate of a dry run's small probe, not a peak (measured at session start): " if meta.get("mode") == "dry-run"
         else "peak GEMM (measured at session start): ") + ", ".join(f"{d} {v:.0f} GFLOP/s" for d, v in start.items()),
        *_probe_facts(peaks),
        f"git commit {machine.get('git_commit', '?')}",
    ]


def _probe_facts(peaks: Peaks) -> list[str]:
    """The peak probe: each peak with its spread, the single-thread peaks, the rule, and the
    float32 probe at the session's end; nothing for sessions before it."""
    probed = sorted((p for p in peaks.cpu if not math.isnan(p.spread)), key=lambda p: (p.dtype, p.one_thread))
    if not probed:
        return []
    lines = ["peak probe spread (max-min over median of its repeats): " + ", ".join(
        f"{p.dtype}{' 1 thread' if p.one_thread else ''} {p.gflops:.0f} GFLOP/s spread {100 * p.spread:.1f}%"
        for p in probed), f"roofline peak rule: {peaks.rule or '?'}"]
    start, end = peaks.get("float32"), peaks.end
    if "peak" in end and start and start.gflops:
        lines.append(f"peak probe at the session's end: float32 {end['peak']:.0f} GFLOP/s, spread "
                     f"{100 * end.get('spread', NAN):.1f}%, {100 * (end['peak'] / start.gflops - 1):+.1f}% "
                     "against the start")
    return lines


def _sections(cells, meta, skipped, bench_table, speedup_base,
              peers, scaling=None, repeats=None, noise=None) -> list[tuple[str, list[str], pd.DataFrame | None]]:
    """(title, sentences, table) in the order a reader wants them: the answer, then what to
    distrust, then the evidence."""
    try:
        cores = int(meta.get("machine", {}).get("cpu_cores"))
    except (TypeError, ValueError):
        cores = None
    flags = []
    if meta.get("status", "FINISHED") not in ("FINISHED", "RUNNING"):
        flags.append(f"INCOMPLETE: the session ended {meta['status']} ({meta.get('reason') or 'no reason recorded'}); "
                     "only the cells it finished are shown")
    flags += [f"noisy: {line}" for line in answer.noisy(cells)]
    flags += [f"anomaly: {line}" for line in answer.anomalies(cells, cores)]
    flags += [f"budget: {line}" for line in answer.budget_cuts(cells)]
    flags += [f"skipped: {line}" for line in skipped or []]
    failed = cells[cells["status"] != "FINISHED"]
    flags += [f"{r.status}: {r.cell}: {r.reason}" for r in failed.itertuples()]
    flags += scaling_failures(scaling) if scaling is not None else []
    sections = [("Which implementation is fastest, and is it correct?", answer.headline(cells, speedup_base, repeats), None),
                (f"Flags ({len(flags)})", flags or ["none: no noisy cell, anomaly, budget cut, skip or failure"], None),
                ("Cells", [*([noise[1]] if noise else []),
                           f"Noisy: the IQR of a cell's repeats is above {100 * answer.NOISE_THRESHOLD:.0f}% of their "
                           f"median. Speed-up: samples/s over {speedup_base}'s on the same network and dtype, this "
                           "session. % roofline: FLOP/s over the session's peak GEMM (the roofline peak rule "
                           "above). % shape peak: FLOP/s over the rate this machine's GEMMs reach at the cell's own "
                           "products (its network at its batch; numpy's and torch's, the faster for each product, "
                           "numpy's only in a dry run), the most a family could train at if nothing but its GEMMs "
                           "took time."
                           + (" Detects here: the smallest slowdown `compare` flags with 90% probability at <= 1% "
                              "false alarms, on this machine's noise profile." if noise and noise[0] else "")],
                 summary_table(cells, speedup_base, noise[0] if noise else None))]
    peer_rows = peers_section(cells, peers)
    if peer_rows is not None:
        sections.append(peer_rows)
    scaling_rows = scaling_section(scaling)
    if scaling_rows is not None:
        sections.append(scaling_rows)
    if bench_table is not None and not bench_table.empty:
        sections.append(("pytest-benchmark: one training step", [
            "Per-step latency from benchmarks/suite_train_step.py, all backends in one process, the session's "
            "threads; its JSON is attached to the session's run and saved in .benchmarks/ for "
            "`pytest-benchmark compare`."], bench_table))
    return sections


def write_report(cells: pd.DataFrame, epochs: pd.DataFrame, examples: dict, meta: dict,
                 out_dir: str | Path, *, speedup_base: str, peers: Collection[str],
                 skipped: list[str] | None = None,
                 pytest_benchmark: dict | None = None, scaling: pd.DataFrame | None = None,
                 repeats: dict | None = None, noise: tuple[dict, str] | None = None) -> dict[str, Path]:
    """Writes report.md, report.html (self-contained) and one PNG per figure; returns paths.
    ``speedup_base``: the implementation speed-ups divide by (``impls.SPEEDUP_BASE``); ``peers``: the
    peers' names (``impls.is_peer``); reports/ does not import impls, so the caller names them.
    ``skipped``: one line per cell not run, with its reason; ``pytest_benchmark``: its JSON;
    ``scaling``: the scaling section's cells (``tracking.SCALING_COLUMNS``), if the session ran it;
    ``repeats``: run_id -> samples/s per timed repeat, for the geometric means' intervals;
    ``noise``: (cell -> the slowdown it can detect, the line that says which noise profile), or None."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = answer.complete(cells)
    peaks = Peaks.from_meta(meta)
    pngs = {name: png(fig) for name, fig in build_figures(cells, epochs, examples, peaks, speedup_base, scaling).items()}
    paths = {}
    for name, data in pngs.items():
        paths[name] = out / f"{name}.png"
        paths[name].write_bytes(data)
    sections = _sections(cells, meta, skipped, pytest_benchmark_table(pytest_benchmark), speedup_base, peers, scaling,
                         repeats, noise)
    notes = {"throughput": throughput_notes(cells),
             "accuracy": [answer.ACCURACY_NOTE, *answer.accuracy_spread(cells)]}
    facts = _facts(meta, peaks)
    banner = _banner(meta)
    title = "backprop-bench report" + (f": {meta['status']} session" if banner else "")
    md = [f"# {title}", "", *([f"**{banner}**", ""] if banner else []), *[f"- {f}" for f in facts], ""]
    body = [f"<h1>{html.escape(title)}</h1>"
            + (f"<p class=\"banner\">{html.escape(banner)}</p>" if banner else "")
            + f"<ul class=\"facts\">{''.join(f'<li>{_inline(f)}</li>' for f in facts)}</ul>"]
    for title, lines, table in sections:
        bullets = lines[:-1] if table is not None else lines       # a table's last line introduces it
        md += [f"## {title}", "", *[f"- {line}" for line in bullets], *([""] if bullets else [])]
        body.append(f"<h2>{html.escape(title)}</h2>")
        if bullets:
            body.append("<ul>" + "".join(f"<li>{_inline(line)}</li>" for line in bullets) + "</ul>")
        if table is not None:
            md += [lines[-1], "", to_markdown(table), ""]
            body.append(f"<p>{_inline(lines[-1])}</p>" + table.to_html(index=False, escape=True, border=0, classes="cells"))
    for name, title in FIGURES.items():
        if name in pngs:
            md += [f"## {title}", "", f"![{title}]({name}.png)", "", *[f"- {n}" for n in notes.get(name, [])], ""]
            body.append(f"<h2>{html.escape(title)}</h2>{img(title, pngs[name])}"
                        + "".join(f"<p class=\"note\">{_inline(n)}</p>" for n in notes.get(name, [])))
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(markdown_page(md))
    style = (TEXT + TABLE + NUMBERS + WIDE + " ul.facts{color:#555;font-size:13px} .note{max-width:70em}"
             " .banner{background:#fdd;border:2px solid #c00;padding:.6em 1em;font-weight:bold}")
    paths["html"] = out / "report.html"
    paths["html"].write_text(page("backprop-bench report", body, style))
    return paths


def _banner(meta: dict) -> str:
    """The first thing a report of a session that did not finish says; "" for one that did,
    and for the session's own report (written while it is RUNNING, just before it ends)."""
    status = meta.get("status", "FINISHED")
    if status == "RUNNING" and meta.get("in_progress"):
        return ("RUNNING: this session is still running. Only the cells it has finished so far are shown, and "
                "this report is not linked as latest; its own report comes when it ends.")
    if status in ("FINISHED", "RUNNING"):
        return ""
    return (f"{status}: this session did not finish ({meta.get('reason') or 'no reason recorded'}). Only the "
            "cells it finished are shown, and this report is not linked as latest.")


def _inline(line: str) -> str:
    """HTML of a markdown line: its **bold** kept bold and its `code` set as code, not shown
    as asterisks and backticks."""
    def wrap(text: str, mark: str, tag: str) -> str:
        parts = text.split(mark)
        if len(parts) % 2 == 0:         # an unpaired mark is a character, not markup
            return text
        return "".join(f"<{tag}>{p}</{tag}>" if i % 2 else p for i, p in enumerate(parts))
    return wrap(wrap(html.escape(line), "`", "code"), "**", "strong")
