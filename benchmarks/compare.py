"""``python -m benchmarks compare A B``: read two sessions back, compare them cell by cell
(``reports/compare.py``), print the table, write markdown and HTML, attach both to B's run."""
from __future__ import annotations

from pathlib import Path

import tracking
from reports.compare import compare_cells, render, session_differences
from reports.tables import to_text

FAIL_ON = ("slower", "accuracy", "any")


def load(uri: str, ref: str):
    """(session id, parent row, tidy cells, samples/s per repeat by run id) of ``ref``."""
    run_id = tracking.resolve_ref(uri, ref)
    parent, raw_cells, raw_epochs = tracking.read_session(uri, run_id)
    cells, _ = tracking.tidy(raw_cells, raw_epochs)
    return run_id, parent, cells, tracking.repeat_series(raw_epochs)


def run_compare(uri: str, ref_a: str, ref_b: str, output_dir: str, fail_on: str | None = None,
                threshold: float = 0.1, log=print) -> int:
    """Print and write the comparison; the exit status is 1 when ``fail_on`` finds something."""
    a_id, a_parent, a_cells, a_samples = load(uri, ref_a)
    b_id, b_parent, b_cells, b_samples = load(uri, ref_b)
    table = compare_cells(a_cells, a_samples, b_cells, b_samples, threshold=threshold)
    diffs, machine_note = session_differences(a_parent, b_parent)
    for status, run_id, parent in (("A", a_id, a_parent), ("B", b_id, b_parent)):
        if parent.get("status") != "FINISHED":
            log(f"note: session {status} ({run_id}) is {parent.get('status')}: only its finished cells compare")
    log(f"compare A {a_id} vs B {b_id}")
    if machine_note:
        log(machine_note)
    log("differs: " + ("; ".join(f"{k}: {va} -> {vb}" for k, va, vb in diffs) if diffs else "nothing but the measurements"))
    log(to_text(table.drop(columns=["kind", "accuracy_drop"])))
    counts = table["kind"].value_counts().to_dict()
    log("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        + f"; a verdict needs B/A beyond ×/÷{1 + table.attrs['cut']:.3f} (threshold or session drift)")
    md, page = render(table, diffs, machine_note, a_id, b_id, threshold)
    folder = Path(output_dir) / f"compare-{a_id[:8]}-{b_id[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "compare.md", folder / "compare.html"]
    paths[0].write_text(md)
    paths[1].write_text(page)
    tracking.annotate(uri, b_id, files=paths, artifact_path=f"compare/{a_id}")
    log(f"written: {', '.join(map(str, paths))} (and attached to B's run)")
    slower = bool((table["kind"] == "slower").any())
    worse = bool(table["accuracy_drop"].any() or (table["kind"] == "only in A").any())
    failing = {"slower": slower, "accuracy": worse, "any": slower or worse}.get(fail_on, False)
    return 1 if failing else 0
