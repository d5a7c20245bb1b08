"""``python -m benchmarks compare A B``: read two sessions back, compare them cell by cell
(``reports/compare.py``), print the table, write markdown and HTML, attach both to B's run."""
from __future__ import annotations

from pathlib import Path

import tracking
from reports.compare import HIDDEN, compare_cells, exit_reasons, render, session_differences
from reports.geomean import overall_changes, sentence
from reports.tables import to_text
from reports.text import one_line

FAIL_ON = ("slower", "accuracy", "any")
# the calibrate that profiles each mode's sessions
CALIBRATE_FLAG = {"full": "", "quick": " --quick", "dry-run": " --dry-run", "regress": " --gate"}


def load(store: tracking.Store, run_id: str, key: str = "samples_per_second"):
    """(session id, parent row, tidy cells, per run id its series ``key`` per repeat: samples/s,
    or a gate session's ``speed_ratio``) of session ``run_id``."""
    parent, raw_cells, raw_epochs = tracking.read_session(store, run_id)
    cells, _ = tracking.tidy(raw_cells, raw_epochs)
    return run_id, parent, cells, tracking.repeat_series(raw_epochs, key)


def calibrated_cuts(store: tracking.Store, a_parent, b_parent) -> tuple[dict[str, float], dict[str, float], str]:
    """(cell -> calibrated cut, cell -> detectable slowdown, the line that says where the cuts
    come from): the latest noise
    profile (``calibrate``) of the machine and mode both sessions ran on, used even when stale
    (and named so); none across two machines or modes, or without a profile."""
    label = [tracking.session_label(p) for p in (a_parent, b_parent)]
    mode = [str(p.get("params.mode", "?")) for p in (a_parent, b_parent)]
    shown = [one_line(x) for x in label]            # store values, printed: shown, never obeyed
    if label[0] != label[1] or mode[0] != mode[1]:
        return {}, {}, (f"uncalibrated: the sessions ran on {shown[0]} ({one_line(mode[0])}) and {shown[1]} "
                    f"({one_line(mode[1])}); a noise profile describes one machine and mode")
    profile = tracking.profiles.latest_profile(store, label[1], mode[1])
    if profile is None:
        return {}, {}, uncalibrated_line(label[1], mode[1], "per-cell cuts")
    return ({cell: v["cut"] for cell, v in profile["cells"].items()},
            {cell: v["detectable"] for cell, v in profile["cells"].items()},
            profile_line(profile, label[1], mode[1], b_parent, "cut at their noise profile"))


def uncalibrated_line(label: str, mode: str, what: str) -> str:
    """The line of a command that found no noise profile of ``label`` for ``mode`` sessions."""
    said = f"uncalibrated: no noise profile of {one_line(label)} for {one_line(mode)} sessions"
    if mode not in CALIBRATE_FLAG:
        return f"{said} (calibrate profiles {', '.join(CALIBRATE_FLAG)} sessions)"
    return f"{said}; run `python -m benchmarks calibrate{CALIBRATE_FLAG[mode]}` for {what}"


def profile_line(profile: dict, label: str, mode: str, parent, what: str) -> str:
    """The line that says which profile judged how many cells (``what``), named STALE, with why,
    when it is older than the code of session ``parent``."""
    stale = tracking.profiles.staleness(profile, parent)
    return (f"calibrated: {len(profile['cells'])} cells {what}, calibration run {profile['run_id'][:8]} "
            f"({profile['sessions']} {one_line(mode)} sessions on {one_line(label)}, {profile['started']})"
            + (f"; STALE, still used: {one_line('; '.join(stale))}" if stale else ""))


def resolve_pair(store: tracking.Store, ref_a: str, ref_b: str, mode: str | None, any_status: bool) -> tuple[str, str]:
    """The two sessions named. ``latest`` and ``latest~N`` count sessions of one kind: ``mode``,
    else the mode of the other side when it is a run id (``compare ID latest``: the latest
    session run like ID), else that of the newest finished bench session."""
    tracking.reap_stale(store)
    if mode is None:
        named = [ref for ref in (ref_a, ref_b) if not tracking.refs.LATEST.fullmatch(ref)]
        if len(named) == 1:
            mode = tracking.session_mode(store, tracking.resolve_ref(store, named[0]))
    return tuple(tracking.resolve_ref(store, ref, mode, any_status) for ref in (ref_a, ref_b))


def run_compare(store: tracking.Store, ref_a: str, ref_b: str, output_dir: str, fail_on: str | None = None,
                threshold: float = 0.1, log=print, *, mode: str | None = None, any_status: bool = False,
                fail_on_missing: bool = False) -> int:
    """Print and write the comparison; the exit status is 1 when ``fail_on`` finds something
    (or, with ``fail_on_missing``, a cell of A is missing from B), and the cells and reasons
    are printed then."""
    a_ref, b_ref = resolve_pair(store, ref_a, ref_b, mode, any_status)
    a_id, a_parent, a_cells, a_samples = load(store, a_ref)
    b_id, b_parent, b_cells, b_samples = load(store, b_ref)
    cuts, detects, calibration = calibrated_cuts(store, a_parent, b_parent)
    table = compare_cells(a_cells, a_samples, b_cells, b_samples, threshold=threshold, cuts=cuts, detects=detects)
    diffs, machine_note = session_differences(a_parent, b_parent)
    for status, run_id, parent in (("A", a_id, a_parent), ("B", b_id, b_parent)):
        if parent.get("status") != "FINISHED":
            log(f"note: session {status} ({run_id}) is {parent.get('status')}: only its finished cells compare")
    log(f"compare A {a_id} vs B {b_id}")
    if machine_note:
        log(machine_note)
    log(calibration)
    log("differs: " + ("; ".join(f"{k}: {va} -> {vb}" for k, va, vb in diffs) if diffs else "nothing but the measurements"))
    log(to_text(table.drop(columns=HIDDEN)))
    counts = table["kind"].value_counts().to_dict()
    log("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        + f"; a verdict needs B/A beyond ×/÷{1 + table.attrs['cut']:.3f} (threshold or session drift)"
        + (", or a calibrated cell's own cut" if cuts else ""))
    overall = overall_changes(a_cells, a_samples, b_cells, b_samples)
    overall_line = sentence(overall, "B/A") if not overall.empty else ""
    if overall_line:
        log(overall_line)
    md, page = render(table, diffs, machine_note, a_id, b_id, threshold, calibration, overall_line)
    folder = Path(output_dir) / f"compare-{a_id[:8]}-{b_id[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "compare.md", folder / "compare.html"]
    paths[0].write_text(md)
    paths[1].write_text(page)
    tracking.annotate(store, b_id, files=paths, artifact_path=f"compare/{a_id}")
    log(f"written: {', '.join(map(str, paths))} (and attached to B's run)")
    for side in ("A", "B"):
        only = table.loc[table["kind"] == f"only in {side}", "cell"].tolist()
        if only:
            log(f"only in {side} ({len(only)}, {'a failure with --fail-on-missing' if side == 'A' else 'not compared'}): "
                + ", ".join(only))
    failing = exit_reasons(table, fail_on, fail_on_missing)
    asked = " and ".join(filter(None, [f"--fail-on {fail_on}" if fail_on else "",
                                       "--fail-on-missing" if fail_on_missing else ""]))
    if failing:
        log(f"exit 1 ({asked}): {len(failing)} cell(s)")
        for cell, reason in failing:
            log(f"  {cell}: {reason}")
        return 1
    if asked:
        log(f"exit 0 ({asked}): no cell fails")
    return 0
