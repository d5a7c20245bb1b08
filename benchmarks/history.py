"""``python -m benchmarks history``: every cell across the store's sessions, ordered by git
history, with its steps found (``reports/history.py``); written as a page with small
multiples, and logged to the store as a run of kind ``history`` so the UI shows it.

Only FINISHED sessions whose commit is in the selected git history are used (a ``-dirty``
commit counts as its commit); the others are counted and said so. Modes and schedules are
kept apart: a cell's series is one mode's (full, quick, dry-run, regress), with its epochs
and training samples, since a quick session's accuracy is not a full one's.
"""
from __future__ import annotations

import fnmatch
import re
import subprocess
import time
from pathlib import Path

import pandas as pd

import tracking
from benchmarks.config import UsageError
from reports.history import build_series, cell_key, find_steps, render
from reports.tables import to_text

ROOT = Path(__file__).resolve().parents[1]


def git_order(repo: str | Path, revisions: str) -> list[str]:
    """Commits of ``revisions`` (a branch, or a range ``A..B``), oldest first, as git orders them.
    Each end is checked to name a commit, and reaches git after ``--end-of-options``: a value
    is never read as an option."""
    for end in filter(None, re.split(r"\.{2,3}", revisions)):
        if end.startswith("-") or re.search(r"[\x00-\x20\x7f]", end):
            raise UsageError(f"history: {revisions!r} is not a revision (a branch, a commit or a range A..B); "
                             "a revision never starts with '-' nor holds spaces or control characters")
        found = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "--end-of-options",
                                f"{end}^{{commit}}"], capture_output=True, text=True)
        if found.returncode != 0:
            said = found.stderr.strip().removeprefix("fatal: ")
            raise UsageError(f"history: {said} (--repo {repo})" if said
                             else f"history: {end!r} names no commit in {repo}")
    proc = subprocess.run(["git", "-C", str(repo), "rev-list", "--reverse", "--topo-order", "--end-of-options",
                           revisions], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"git rev-list {revisions} in {repo}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout.split()


def select_sessions(store: tracking.Store, commits: list[str], machine: str | None, since, log=print,
                    mode: str | None = None) -> pd.DataFrame:
    """session, commit, mode, in git order then start time; what was left out is said."""
    sessions = tracking.list_sessions(store)
    if sessions.empty:
        raise UsageError(f"no session in {store.display}")
    none = pd.Series(None, index=sessions.index, dtype=object)
    sessions = sessions.assign(commit=sessions.get("tags.git_commit", none).fillna("").str.removesuffix("-dirty"),
                               mode=sessions.get("params.mode", none).fillna("unknown"))
    keep = sessions["status"] == "FINISHED"
    if mode:
        keep &= sessions["mode"] == mode
    if machine:
        none = pd.Series("", index=sessions.index)
        keep &= (sessions.get("tags.bpb.machine", none) == machine) | (sessions.get("tags.bpb.host", none) == machine)
    if since:
        keep &= sessions["start_time"] >= pd.Timestamp(since, tz="UTC")
    position = {c: i for i, c in enumerate(commits)}
    keep &= sessions["commit"].isin(position)
    left_out = int((~keep).sum())
    chosen = sessions[keep].assign(pos=lambda d: d["commit"].map(position))
    chosen = chosen.sort_values(["pos", "start_time"]).rename(columns={"run_id": "session"})
    log(f"history: {len(chosen)} sessions over {chosen['commit'].nunique()} commits"
        + (f" ({', '.join(f'{m} {n}' for m, n in chosen['mode'].value_counts().sort_index().items())})"
           if not chosen.empty else "")
        + (f"; {left_out} left out (not FINISHED, other mode or machine, too old, or commit not in the history)"
           if left_out else ""))
    return chosen[["session", "commit", "mode"]]


def schedule(raw: pd.DataFrame) -> list[str]:
    """Each accuracy cell's training schedule as text: ``e5`` (5 epochs on every sample) or
    ``e1n20000`` (1 epoch on 20,000); "" for a throughput cell, or a cell that recorded none."""
    def one(kind, epochs, limit) -> str:
        if kind != "accuracy" or not isinstance(epochs, str):
            return ""
        return f"e{epochs}" + (f"n{limit}" if isinstance(limit, str) and limit != "None" else "")
    none = pd.Series(None, index=raw.index, dtype=object)
    return [one(*v) for v in zip(*(raw.get(c, none) for c in ("tags.bpb.cell_kind", "params.epochs",
                                                               "params.train_limit")))]


def profile_sigmas(store: tracking.Store, machine: str | None, cells: pd.DataFrame,
                   order: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """(series key -> a calibrated cell's session noise, one line per mode that says where it
    came from): the latest noise profile of ``machine`` for each mode in ``order``, named stale
    against the newest session of that mode. A profile describes one machine: without
    ``--machine`` none is used."""
    from benchmarks.compare import profile_line, uncalibrated_line
    from reports.noise import session_sigma
    modes = sorted(order["mode"].unique())
    if not machine:
        return {}, ["uncalibrated: a noise profile describes one machine; pass --machine to judge each cell's "
                    "speed steps by its own (`python -m benchmarks calibrate`)"] if modes else []
    sigmas, lines = {}, []
    sessions = tracking.list_sessions(store).set_index("run_id")
    for mode in modes:
        profile = tracking.profiles.latest_profile(store, machine, mode)
        if profile is None:
            lines.append(uncalibrated_line(machine, mode, "per-cell noise"))
            continue
        mine = cells[(cells["mode"] == mode) & cells["cell"].isin(profile["cells"])]
        for row in mine.itertuples():
            key = cell_key(row._asdict())
            sigmas[key] = max(sigmas.get(key, 0.0), session_sigma(profile["cells"][row.cell]["cut"]))
        newest = sessions.loc[order.loc[order["mode"] == mode, "session"].iloc[-1]]
        lines.append(profile_line(profile, machine, mode, newest, "judged by their noise profile (speed steps)"))
    return sigmas, lines


def run_history(store: tracking.Store, output_dir: str, commits: list[str], revisions: str = "HEAD",
                machine: str | None = None, cell: str | None = None, since=None, log=print,
                mode: str | None = None) -> int:
    """The history of ``revisions``, whose commits in git order are ``commits`` (``git_order``)."""
    order = select_sessions(store, commits, machine, since, log=log, mode=mode)
    raw = tracking.all_cells(store)
    cells, _ = tracking.tidy(raw, pd.DataFrame(columns=["run_id", "key", "step", "value"]))
    cells["session"] = raw["session"].to_numpy() if not raw.empty else []
    cells["schedule"] = schedule(raw) if not raw.empty else []
    cells = cells.merge(order[["session", "mode"]], on="session", how="left")
    if cell:
        cells = cells[[fnmatch.fnmatch(cell_key(r), f"*{cell}*") for _, r in cells.iterrows()]]
    series = build_series(cells, order)
    if series.empty:
        raise UsageError("history: no cell matches (check --cell, --mode, --machine, --since and the commit range)")
    sigmas, calibration = profile_sigmas(store, machine, cells, order)
    for line in calibration:
        log(line)
    steps = find_steps(series, sigmas)
    log(to_text(steps[["text"]].rename(columns={"text": "step"})) if not steps.empty else "no step found")
    scope = (f"{revisions}" + (f", mode {mode}" if mode else "") + (f", machine {machine}" if machine else "")
             + (f", cells *{cell}*" if cell else ""))
    md, page, pngs = render(series, steps, scope, " ".join(calibration))
    folder = Path(output_dir) / "history"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "history.md", folder / "history.html"]
    paths[0].write_text(md)
    paths[1].write_text(page)
    for name, data in pngs.items():
        paths.append(folder / f"history-{name}.png")
        paths[-1].write_bytes(data)
    run = tracking.Session.start(store, name=f"history-{time.strftime('%Y%m%d-%H%M%S')}",
                                 params={"revisions": revisions, "machine": machine or "any", "cell": cell or "any",
                                         "since": since or "any", "mode": mode or "any"},
                                 tags={"bpb.kind": "history", "bpb.steps": len(steps)})
    for path in paths:
        run.log_artifact(path, "history")
    run.log(metrics={"sessions": len(order), "steps": len(steps)})
    run.finish("FINISHED")
    log(f"written: {paths[1]} (and logged as history run {run.run_id})")
    return 0
