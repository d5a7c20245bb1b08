"""Two sessions side by side: per cell, samples/s in A and B, the ratio B/A with a bootstrap
confidence interval and a verdict, accuracy and parity in both; above it, only what differs
between the sessions. Pure functions from tidy frames (``tracking.CELL_COLUMNS``) to tables
and markdown/HTML; ``benchmarks/compare.py`` reads the sessions and writes the files.

A verdict of *faster* or *slower* needs both: the 95% bootstrap interval of the ratio of
medians excludes 1, and |ln(B/A)| is beyond a cut. The interval only knows the spread within a
session; on a shared machine whole sessions drift (two --quick sessions of one tree, measured
back to back on a quiet machine: 2-thread cells moved up to 23%, docs/performance.md). So the
cut is the larger of ``threshold`` (default 10%) and 4 x the drift between the two sessions,
estimated robustly over their cells (1.4826 x the median absolute deviation of ln(B/A)): one
implementation slowed down moves a few cells, not the median, and stands out of the drift.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from reports.page import TABLE, TEXT, page
from reports.stats import bootstrap_ratio
from reports.text import at_least, markdown_page, one_line
from reports.tables import to_markdown
from tracking.peaks import MEASURED_PARAMS

LEVEL = 0.95
MIN_REPEATS = 3           # fewer timed repeats a side give no interval worth the name
DRIFT_Z = 4.0             # a verdict needs |ln(B/A)| beyond this many drift sigmas ...
MIN_CELLS_FOR_DRIFT = 5   # ... estimated when at least this many cells are comparable
MAX_CUT = 1.5             # ... and never beyond x/÷1.5 (the speed gate's default band, +-50%)
COLUMNS = ["cell", "samples/s A", "samples/s B", "B/A", "95% CI", "verdict", "test acc A", "test acc B",
           "parity A", "parity B", "acc/parity"]
HIDDEN = ["kind", "accuracy_drop", "accuracy_reason", "speed_reason"]   # what decides an exit, and why


def _fmt(x, spec):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def compare_cells(a: pd.DataFrame, a_samples: dict, b: pd.DataFrame, b_samples: dict,
                  threshold: float = 0.1, accuracy_tolerance: float = 0.005,
                  cuts: dict[str, float] | None = None, detects: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per cell present in either session. ``*_samples``: run_id -> samples/s per
    timed repeat (per epoch for accuracy cells). Columns: COLUMNS (``acc/parity``: worse, ok,
    or - where there is nothing to compare), plus ``kind`` of verdict (``slower``, ``faster``,
    ``same``, ``unknown``, ``only in A``, ``only in B``, ``failed``), ``accuracy_drop`` (B's
    accuracy or parity is worse beyond the tolerance, or B failed a cell A finished), and the
    reasons in words: ``accuracy_reason``, ``speed_reason``. ``cuts``: cell -> its calibrated cut on
    |ln(B/A)| (a noise profile, ``reports/noise.py``): such a cell's verdict is that cut alone, the
    rule its false alarms were measured under; the other cells keep the rule above. With
    ``cuts``, two more columns: ``cut`` (the one each cell was judged by) and ``detects`` (the
    slowdown a calibrated cell can detect, ``detects``: cell -> fraction)."""
    ia, ib = a.set_index("cell"), b.set_index("cell")
    rows = []
    for cell in sorted(set(ia.index) | set(ib.index)):
        ra, rb = (ia.loc[cell] if cell in ia.index else None), (ib.loc[cell] if cell in ib.index else None)
        row = {"cell": cell, "samples/s A": "-", "samples/s B": "-", "B/A": "-", "95% CI": "-",
               "test acc A": _fmt(None if ra is None else ra["test_accuracy"], ".4f"),
               "test acc B": _fmt(None if rb is None else rb["test_accuracy"], ".4f"),
               "parity A": _fmt(None if ra is None else ra["parity_max_error"], ".1e"),
               "parity B": _fmt(None if rb is None else rb["parity_max_error"], ".1e"),
               "acc/parity": "-", "accuracy_drop": False, "accuracy_reason": "", "speed_reason": ""}
        if ra is None or rb is None:
            row["verdict"] = row["kind"] = "only in A" if rb is None else "only in B"
            rows.append(row)
            continue
        reason = accuracy_change(ra, rb, accuracy_tolerance)
        if rb["status"] != "FINISHED" and ra["status"] == "FINISHED":
            reason = f"B {rb['status']} where A finished" + (f": {rb['reason']}" if _text(rb.get("reason")) else "")
        both = ra["status"] == rb["status"] == "FINISHED"
        row.update({"accuracy_drop": bool(reason), "accuracy_reason": reason,
                    "acc/parity": "worse" if reason else ("ok" if both else "-")})
        sa, sb = a_samples.get(ra["run_id"], []), b_samples.get(rb["run_id"], [])
        if not both or not sa or not sb:
            row["kind"] = "failed"
            row["verdict"] = f"not comparable: A {ra['status']}, B {rb['status']}"
            rows.append(row)
            continue
        if min(len(sa), len(sb)) < MIN_REPEATS:
            row.update({"samples/s A": f"{np.median(sa):,.0f}", "samples/s B": f"{np.median(sb):,.0f}",
                        "B/A": f"{np.median(sb) / np.median(sa):.3f}", "kind": "unknown",
                        "verdict": f"too few repeats for a verdict ({len(sa)} and {len(sb)}, need {MIN_REPEATS})"})
            rows.append(row)
            continue
        ratio, lo, hi = bootstrap_ratio(sa, sb, level=LEVEL)
        row.update({"samples/s A": f"{np.median(sa):,.0f}", "samples/s B": f"{np.median(sb):,.0f}",
                    "B/A": f"{ratio:.3f}", "95% CI": f"{lo:.3f}-{hi:.3f}", "_ratio": (ratio, lo, hi)})
        rows.append(row)
    cut = verdict_cut([r["_ratio"][0] for r in rows if "_ratio" in r], threshold)
    for r in rows:
        if "_ratio" in r:
            ratio, lo, hi = r.pop("_ratio")
            mine = (cuts or {}).get(r["cell"])
            if mine is not None:         # calibrated: the cut alone, as its false alarms were measured
                lo, hi = math.inf, 0.0
            own = cut if mine is None else mine
            r["kind"] = ("slower" if hi < 1 and math.log(ratio) < -own else
                         "faster" if lo > 1 and math.log(ratio) > own else "same")
            r["verdict"] = "no significant change" if r["kind"] == "same" else r["kind"]
            if cuts:
                r["cut"] = f"÷{math.exp(own):.3f}" + (" calibrated" if mine is not None else "")
                slowdown = (detects or {}).get(r["cell"])
                r["detects"] = at_least(slowdown) if slowdown is not None else "-"
            if r["kind"] == "slower":
                r["speed_reason"] = (f"slower: B/A {ratio:.3f}, beyond ÷{math.exp(own):.3f}" +
                                     (" (calibrated)" if mine is not None else f" (95% CI {r['95% CI']})"))
    shown = [*COLUMNS[:6], "cut", "detects", *COLUMNS[6:]] if cuts else COLUMNS
    table = pd.DataFrame(rows, columns=[*shown, *HIDDEN]).fillna({"cut": "-", "detects": "-"} if cuts else {})
    table.attrs["cut"] = math.exp(cut) - 1
    return table


def accuracy_change(ra, rb, tolerance: float) -> str:
    """Why B is worse than A, in words: its test accuracy below A's beyond ``tolerance`` (or
    missing), its parity error over 10x A's; "" when it is not."""
    acc_a, acc_b = float(ra["test_accuracy"]), float(rb["test_accuracy"])
    par_a, par_b = float(ra["parity_max_error"]), float(rb["parity_max_error"])
    reasons = []
    if not math.isnan(acc_a) and math.isnan(acc_b):
        reasons.append(f"test accuracy {acc_a:.4f} in A, none in B")
    elif not math.isnan(acc_a) and acc_b < acc_a - tolerance:
        reasons.append(f"test accuracy {acc_a:.4f} -> {acc_b:.4f} ({acc_b - acc_a:+.4f}, tolerance {tolerance:g})")
    if not math.isnan(par_b) and par_b > max(par_a * 10, 1e-12):
        reasons.append(f"parity error {par_a:.1e} -> {par_b:.1e} (over 10x A's)")
    return "; ".join(reasons)


def _text(value) -> bool:
    return isinstance(value, str) and bool(value)


def exit_reasons(table: pd.DataFrame, fail_on: str | None, missing: bool = False) -> list[tuple[str, str]]:
    """(cell, reason) for each cell that makes ``compare`` exit 1: slower with ``fail_on``
    slower or any, worse accuracy or parity with accuracy or any, and with ``missing`` a cell
    of A that B lacks. Cells found on one side only are no failure otherwise."""
    out = []
    for row in table.to_dict("records"):
        reasons = []
        if fail_on in ("slower", "any") and row["kind"] == "slower":
            reasons.append(row["speed_reason"])
        if fail_on in ("accuracy", "any") and row["accuracy_drop"]:
            reasons.append(row["accuracy_reason"])
        if missing and row["kind"] == "only in A":
            reasons.append("in A, missing from B (--fail-on-missing)")
        if reasons:
            out.append((row["cell"], "; ".join(reasons)))
    return out


def verdict_cut(ratios, threshold: float) -> float:
    """The |ln(B/A)| a cell must exceed: ln(1 + threshold), or DRIFT_Z drift sigmas if larger,
    but never more than ln(MAX_CUT): when half the cells moved, the median absolute deviation
    measures the move itself, not the drift, and must not hide it."""
    logs = np.log(np.asarray(ratios, dtype=np.float64))
    cut = math.log(1 + threshold)
    if len(logs) >= MIN_CELLS_FOR_DRIFT:
        drift = 1.4826 * float(np.median(np.abs(logs - np.median(logs))))
        cut = max(cut, min(DRIFT_Z * drift, math.log(MAX_CUT)))
    return cut


# What makes another machine: its label (``--machine``, else the host name), CPU model and core
# count. The rest of the inventory is the software on it (and the GPU in it), which can change
# on one machine: it is named as such, never as another machine.
MACHINE_KEYS = ("cpu_model", "cpu_cores")
GPU_KEYS = ("gpu", "gpu_memory", "gpu_compute_capability")
SOFTWARE_KEYS = ("platform", "python", "blas", "gpu_driver", "gpu_cuda_driver", "gpu_cuda_runtime")
LIST_KEYS = ("machine.blas", "machine.threads_blas")   # one entry per library loaded, in any order


def _value(row: pd.Series, key: str) -> str:
    """``row[key]`` as the text compared, on one line (``reports/text.py`` ``one_line``: it is
    printed in the terminal): "-" when absent; a list of libraries sorted (sessions recorded
    before the inventory sorted it listed them in the order they were loaded)."""
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    text = one_line(v)
    if key.endswith(LIST_KEYS):
        sep = "; " if key.endswith("machine.blas") else ";"
        text = sep.join(sorted(part.strip() for part in text.split(sep.strip())))
    return text


def machine_label(row: pd.Series) -> str:
    """The session's machine label (tag ``bpb.machine``), else its host for sessions recorded
    before labels existed."""
    label = _value(row, "tags.bpb.machine")
    return label if label != "-" else _value(row, "tags.bpb.host")


def session_differences(a: pd.Series, b: pd.Series) -> tuple[list[tuple[str, str, str]], str | None]:
    """(what differs: [(name, A, B)], a plain sentence about the machines when they or their
    software differ, else None). Compared: the session's params (its options, not the peaks it
    measured nor their spreads, nor the words saying why it chose its thread count: they quote
    the load average), its machine inventory and versions, git commit, host, label, dataset.
    The sentence starts "DIFFERENT MACHINES" for another label, CPU model or core count; else
    it names another GPU and the software that differs ("different software: ...")."""
    keys = sorted(k for k in set(a.index) | set(b.index) if isinstance(k, str) and (
        (k.startswith("params.") and k.removeprefix("params.") not in MEASURED_PARAMS and k != "params.threads_reason")
        or k.startswith("tags.machine.") or
        k in ("tags.git_commit", "tags.bpb.host", "tags.bpb.machine", "tags.dataset_digest")))
    diffs = [(k.split(".", 1)[1], va, vb) for k in keys
             if (va := _value(a, k)) != (vb := _value(b, k))]

    def differing(names):
        return [(n, _value(a, f"tags.machine.{n}"), _value(b, f"tags.machine.{n}")) for n in names
                if _value(a, f"tags.machine.{n}") != _value(b, f"tags.machine.{n}")]
    machine = differing(MACHINE_KEYS)
    if machine or machine_label(a) != machine_label(b):
        return diffs, (f"DIFFERENT MACHINES: A ran on {machine_label(a)} ({_value(a, 'tags.machine.cpu_model')}, "
                       f"{_value(a, 'tags.machine.cpu_cores')} cores), B on {machine_label(b)} "
                       f"({_value(b, 'tags.machine.cpu_model')}, {_value(b, 'tags.machine.cpu_cores')} cores); "
                       "a speed ratio here compares machines as much as code")
    versions = sorted({k.split(".", 2)[2] for k in keys if k.startswith("tags.machine.version_")})
    parts = [f"different GPU: {name} {va} -> {vb}" for name, va, vb in differing(GPU_KEYS)]
    software = differing((*SOFTWARE_KEYS, *versions))
    if software:
        parts.append("different software: " + "; ".join(f"{name} {va} -> {vb}" for name, va, vb in software))
    if not parts:
        return diffs, None
    return diffs, (f"same machine ({machine_label(a)}, {_value(a, 'tags.machine.cpu_model')}, "
                   f"{_value(a, 'tags.machine.cpu_cores')} cores), " + "; ".join(parts))


def render(table: pd.DataFrame, diffs, machine_note, a_id: str, b_id: str, threshold: float,
           calibration: str = "", overall: str = "") -> tuple[str, str]:
    """(markdown, self-contained HTML) of a comparison; ``calibration``: where the calibrated cuts
    came from (``benchmarks/compare.py``), or why there are none; ``overall``: each
    implementation's geometric mean of B/A (``reports/geomean.py``), shown above the cells."""
    title = f"backprop-bench compare: A {a_id} vs B {b_id}"
    cut = table.attrs.get("cut", threshold)
    rule = (f"Verdict: faster/slower when the {LEVEL:.0%} bootstrap interval of B/A (ratio of medians over the "
            f"timed repeats) excludes 1 and B/A is beyond ×/÷{1 + cut:.3f}: the larger of ±{threshold:.0%} and "
            f"{DRIFT_Z:g} x the drift between the two sessions.")
    if "cut" in table.columns:
        rule += (" A cell whose cut says calibrated is judged by B/A beyond that cut alone, from the machine's "
                 "noise profile (python -m benchmarks calibrate); detects: the slowdown it can see there.")
    if calibration:
        rule += f" {calibration}"
    shown = table[[c for c in table.columns if c not in HIDDEN]]
    diff_frame = pd.DataFrame(diffs, columns=["what", "A", "B"])
    md = [f"# {title}", ""]
    if machine_note:
        md += [f"**{machine_note}**", ""]
    md += ["## What differs", "", to_markdown(diff_frame) if diffs else "nothing but the measurements", "",
           *([overall, ""] if overall else []), "## Cells", "", rule, "", to_markdown(shown), ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    if machine_note:
        body.append(f"<p><strong>{html.escape(machine_note)}</strong></p>")
    body += ["<h2>What differs</h2>",
             diff_frame.to_html(index=False, border=0, classes="cells") if diffs else "<p>nothing but the measurements</p>",
             *([f"<p>{html.escape(overall)}</p>"] if overall else []),
             f"<h2>Cells</h2><p>{html.escape(rule)}</p>", shown.to_html(index=False, border=0, classes="cells")]
    return markdown_page(md), page(title, body, TEXT + TABLE)
