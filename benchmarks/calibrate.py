"""``python -m benchmarks calibrate``: A/A calibration. K sessions of one matrix on unchanged
code, back to back, then per throughput cell its noise (``reports/noise.py``): the spread within
a session, the drift between sessions, the false alarms that today's ``compare`` rule and the
calibrated cut raise among the K(K-1)/2 pairs, and the minimum detectable slowdown (by formula,
checked by re-sampling). The table is printed, written to ``<output-dir>/calibration-<id>/``
and logged as a run of kind ``calibration`` with the machine label: this machine's noise profile.

The K sessions are ordinary bench sessions (each in the store, each with its report), tagged
with the calibration they belong to. The scaling section and the pytest-benchmark suite are
left out: neither is compared by ``compare``. With ``--gate`` they are the regression gate's
sessions (mode ``regress``), and what is profiled is what the gate judges: each speed cell's
ratio over numpy-sample, paired in its process, against the gate's own rule (its band and
Mann-Whitney test, ``benchmarks/regress.py``); ``regress`` reads that profile back.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import tracking
from benchmarks.compare import load
from benchmarks.config import UsageError
from benchmarks.plan import BenchOptions
from benchmarks.regress import MIN_BAND, Measured, judge_speed, uninformative
from benchmarks.session import SessionSettings, run_session
from benchmarks.threads import default_threads
from benchmarks.update_rule import speed_entry
from reports.noise import calibration_table
from reports.tables import to_markdown, to_text
from reports.text import markdown_page, one_line

TARGET = 0.10             # the slowdown a cell should detect: compare's default cut


def run_calibrate(store: tracking.Store, options: BenchOptions, data, settings: SessionSettings, sessions: int,
                  log=print) -> int:
    """Run ``sessions`` sessions of ``options`` back to back, then make their profile. The thread
    count is chosen once, before the first: sessions on different thread counts are not A/A."""
    began = time.strftime("%Y%m%d-%H%M%S")
    if settings.threads is None:
        threads, reason = default_threads()
        settings = dataclasses.replace(settings, threads=threads,
                                       threads_reason=f"chosen once for the {sessions} sessions of a calibration: {reason}")
        log(f"calibration: {threads} threads in every session ({reason})")
    ids = []
    for k in range(1, sessions + 1):
        log(f"calibration: session {k} of {sessions}")
        _, run_id = run_session(options, data, store, settings, log=log)
        tracking.annotate(store, run_id, tags={"bpb.calibration": began})
        ids.append(run_id)
    return make_profile(store, ids, settings.out_dir, log)


def gate_flag(a: list[float], b: list[float]) -> bool:
    """The speed gate's rule on an A/A pair: B's paired ratios judged against a baseline entry
    made from A's, as ``regress --update`` would have written it (``benchmarks/regress.py``)."""
    entry = speed_entry(a, MIN_BAND)
    if uninformative(entry["samples"]) or uninformative(b):
        return False
    measured = Measured("", "speed", "", "", ratios=list(b))
    return judge_speed("", entry, measured, "warn").verdict.startswith("SLOWER")


def make_profile(store: tracking.Store, ids: list[str], out_dir: str, log=print) -> int:
    """The noise profile of sessions ``ids`` (one machine label, one mode): the table printed,
    written, and logged as a run of kind ``calibration``."""
    modes = {str(tracking.session_mode(store, rid) or "?") for rid in ids}
    gate = modes == {"regress"}             # the gate judges paired ratios, by its own rule
    loaded = [load(store, rid, "speed_ratio" if gate else "samples_per_second") for rid in ids]
    labels = {tracking.session_label(p) for _, p, _, _ in loaded}
    threads = {str(p.get("params.threads", "?")) for _, p, _, _ in loaded}
    if len(labels) > 1 or len(modes) > 1 or len(threads) > 1:
        raise UsageError(f"a noise profile is of one machine, one mode and one thread count; these sessions ran on "
                         f"{', '.join(map(one_line, sorted(labels)))} in {', '.join(map(one_line, sorted(modes)))} "
                         f"mode on {', '.join(map(one_line, sorted(threads)))} threads")
    label, mode = labels.pop(), modes.pop()
    rule = "gate" if gate else "compare"
    table = calibration_table(loaded, target=TARGET, rule=gate_flag if gate else None, rule_name=rule)
    if table.empty:
        raise UsageError("no throughput cell finished in two sessions or more: nothing to calibrate")
    began = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(out_dir) / f"calibration-{began}"
    folder.mkdir(parents=True, exist_ok=True)
    summary = table.attrs["summary"]
    lines = [f"A/A calibration on {one_line(label)}: {len(ids)} {one_line(mode)} sessions of unchanged code "
             f"({', '.join(i[:8] for i in ids)}), {len(table)} throughput cells.",
             f"False alarms among the {summary['pairs']} pairs of sessions: {rule}'s rule "
             f"{summary[f'{rule}_alarms']} of {summary['cell_pairs']} cell-pairs "
             f"({summary[f'{rule}_rate']:.1%}); the calibrated cut {summary['calibrated_alarms']} "
             f"({summary['calibrated_rate']:.1%}).",
             f"Median minimum detectable slowdown {summary['detectable_median']:.1%} at <= 1% false alarms "
             "per cell (90% power, the cut on a 90% upper bound of each cell's spread); per cell below."]
    (folder / "calibration.md").write_text(markdown_page(["# A/A calibration", "", *[f"- {ln}" for ln in lines], "",
                                                          to_markdown(table), ""]))
    (folder / "calibration.json").write_text(json.dumps({
        "sessions": ids, "summary": summary, "cells": table.to_dict(orient="records"),
        "numbers": table.attrs["numbers"], "measured": tracking.profiles.measured_on(loaded[0][1])}, indent=1))
    for line in lines:
        log(line)
    log(to_text(table))
    run = tracking.Session.start(store, name=f"calibration-{began}",
                                 params={"sessions": ",".join(ids), "mode": mode, "count": len(ids)},
                                 tags={"bpb.kind": "calibration", "bpb.machine": label,
                                       "mlflow.note.content": "\n\n".join(lines)})
    run.log(metrics={k: v for k, v in summary.items() if isinstance(v, (int, float))})
    for name in ("calibration.md", "calibration.json"):
        run.log_artifact(folder / name, "calibration")
    run.finish("FINISHED")
    log(f"written: {folder} (and logged as run {run.run_id})")
    return 0
