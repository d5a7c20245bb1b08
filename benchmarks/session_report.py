"""A session's report: read back from the store, written as markdown, HTML and figures
(``reports/render.py``), attached to the session's run, and linked as ``latest`` when it is a
FINISHED bench session."""
from __future__ import annotations

import json
import os
from pathlib import Path

import impls
import tracking


def render_report(store: tracking.Store, run_id: str | None, out_dir: str, log=print, describe_runs: dict | None = None,
                  written: dict | None = None) -> dict:
    """Read a session back from MLflow, write its report files into ``out_dir/<session id>/``
    (a session that did not finish too: its report says so at the top), point ``out_dir/latest``
    at them when it is a FINISHED bench session, and attach them to the session's run. With
    ``describe_runs`` (cell name -> run id, at the end of a session: the cells timed before
    their reference), each of those runs gets its ``speedup_vs_reference`` metric, and the
    session's run its description: the headline. ``written``: the JSON artifacts the session
    itself wrote (``tracking.Session.written``), read from memory instead of the store; runs
    and metrics are always read back from the store."""
    from reports.answer import headline
    from reports.render import write_report
    from reports.tables import with_speedup
    if written is None:             # a session reaped the store when it started
        tracking.reap_stale(store)
    parent, raw_cells, raw_epochs = tracking.read_session(store, run_id, for_report=True)
    meta = tracking.session_meta(parent)
    # RUNNING and not the session's own report (which it writes just before it ends): a session
    # that another process is still running, read part-way
    meta["in_progress"] = meta["status"] == "RUNNING" and written is None
    if meta["status"] not in ("FINISHED", "RUNNING") or meta["in_progress"]:
        log(f"session {meta['run_id']} is {meta['status']}" + (f" ({meta['reason']})" if meta["reason"] else "")
            + ": the report shows the cells it " + ("has finished so far" if meta["in_progress"] else "finished"))
    cells, epochs = tracking.tidy(raw_cells, raw_epochs)
    repeats = tracking.repeat_series(raw_epochs)
    folder = Path(out_dir) / meta["run_id"]

    def artifact(path: str) -> dict:
        if written is None:
            return tracking.read_json_artifact(store, meta["run_id"], path)
        known = written.get(path, {})     # what the session did not write does not exist
        return json.loads(known.read_text()) if isinstance(known, Path) else known
    extras = {"examples": artifact("examples.json"), "skipped": artifact("skipped.json").get("skipped"),
              "pytest_benchmark": artifact("pytest-benchmark/pytest-benchmark.json")}
    paths = write_report(cells, epochs, extras["examples"], meta, folder, skipped=extras["skipped"],
                         pytest_benchmark=extras["pytest_benchmark"], speedup_base=impls.SPEEDUP_BASE,
                         peers=[n for n in impls.names() if impls.is_peer(n)], scaling=tracking.tidy_scaling(raw_cells), repeats=repeats,
                         noise=noise_of(store, parent, meta["mode"]))
    if meta["status"] == "FINISHED" and meta["mode"] in tracking.BENCH_MODES:
        point_latest(folder)
    elif meta["status"] != "RUNNING" or meta["in_progress"]:      # a session's own is linked when it finishes
        log(f"not linked as {Path(out_dir) / 'latest'}: only a FINISHED bench session is, and this is a "
            f"{meta['status']} {meta['mode']} session")
    tracking.annotate(store, meta["run_id"], files=paths.values(), artifact_path="report")
    if describe_runs is not None:
        speedups = with_speedup(cells, impls.SPEEDUP_BASE).set_index("cell")["speedup"].dropna()
        for cell, run in describe_runs.items():
            if cell in speedups.index:
                tracking.annotate(store, run, metrics={"speedup_vs_reference": speedups[cell]})
        lines = headline(cells, impls.SPEEDUP_BASE, repeats)
        tracking.annotate(store, meta["run_id"], tags={"mlflow.note.content": "\n".join(
            [f"**{meta['mode']} session on {meta['machine'].get('cpu_model', '?')}**, dataset {meta['dataset']}", "",
             *[f"- {line}" for line in lines], "",
             f"Report: artifact `report/report.html` of this run (Artifacts tab); on disk {paths['html']}"])})
    log(f"report for session {meta['run_id']}: {', '.join(str(p) for p in paths.values())}")
    return paths


def noise_of(store: tracking.Store, parent, mode: str) -> tuple[dict, str]:
    """(cell -> the slowdown ``compare`` can detect there, the line that says which noise
    profile of the session's machine and mode said so, stale or not); ({}, "uncalibrated: ...")
    without one."""
    from benchmarks.compare import profile_line, uncalibrated_line
    label = tracking.session_label(parent)
    profile = tracking.profiles.latest_profile(store, label, mode)
    if profile is None:
        return {}, uncalibrated_line(label, mode, "the slowdown each cell can detect here")
    return ({cell: v["detectable"] for cell, v in profile["cells"].items()},
            profile_line(profile, label, mode, parent, "with their detectable slowdown"))


def point_latest(folder: Path) -> None:
    """``latest`` beside ``folder`` becomes a link to it, replaced atomically."""
    link, tmp = folder.parent / "latest", folder.parent / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder.name, target_is_directory=True)
    os.replace(tmp, link)
