"""``report --session A --session B ...`` / ``report --latest-per-machine``: machines side by
side (``reports/across_machines.py``), written under ``reports/out/machines-<id>/`` and logged as a run
of kind ``machines`` (its sessions as params, the files as artifacts), so the UI shows it."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import impls
import tracking
from benchmarks.config import UsageError
from reports.across_machines import write_machines_report
from reports.tables import to_text
from reports.text import one_line


def run_machines_report(store: tracking.Store, refs: list[str] | None, out_dir: str, mode: str | None = None,
                        log=print, any_status: bool = False) -> dict:
    sessions = (tracking.sessions_by_ref(store, refs, mode, any_status) if refs
                else tracking.latest_per_machine(store, mode))
    cells, names = tracking.cells_of(store, sessions)
    if cells.empty:
        raise UsageError("these sessions have no cells to compare")
    modes = sorted(set(sessions["params.mode"].astype(str)))
    if len(modes) > 1:
        log(f"note: the sessions ran different matrices ({', '.join(modes)}): only cells they share line up")
    facts = sessions.assign(machine=names, session=sessions["run_id"], mode=sessions["params.mode"],
                            started=sessions["start_time"].astype(str).str[:19],
                            peak_gemm_gflops=[tracking.session_meta(row)["peak_gemm_gflops"]
                                              for _, row in sessions.iterrows()],
                            cpu=sessions.get("tags.machine.cpu_model"), gpu=sessions.get("tags.machine.gpu"))
    key = hashlib.sha1(",".join(sorted(sessions["run_id"])).encode()).hexdigest()[:8]
    folder = Path(out_dir) / f"machines-{key}"
    paths, table = write_machines_report(cells, facts, dict(impls.PARITY_TOLERANCE), folder, impls.SPEEDUP_BASE)
    log(f"{len(sessions)} machines: " + ", ".join(f"{one_line(m)} ({s[:8]})" for m, s in zip(names, sessions["run_id"])))
    log(to_text(table))
    run = tracking.Session.start(store, name=f"machines-{time.strftime('%Y%m%d-%H%M%S')}",
                                 params={"sessions": ",".join(sessions["run_id"]), "machines": ",".join(names)},
                                 tags={"bpb.kind": "machines"})
    for path in paths.values():
        run.log_artifact(path, "machines")
    run.finish("FINISHED")
    log(f"written: {', '.join(map(str, paths.values()))} (and logged as run {run.run_id})")
    return paths

