"""What earlier sessions on this host say about how long a new session will take: the cells of
the last FINISHED session of the same mode and the time it spent around them, and each
accuracy configuration's training rate from the newest finished cell of any mode."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

from tracking.clock import timed
from tracking.read import list_sessions, previous_durations
from tracking.store import Store, search_frame

SESSIONS_READ = 200       # the newest sessions of the store searched for this host's cells


@dataclass
class Durations:
    session: str = ""            # the last FINISHED session of this mode on this host, or ""
    seconds: dict[str, float] = field(default_factory=dict)   # its cells: name -> wall seconds
    # its wall seconds outside its cells: probes, workers starting, the pytest-benchmark suite, the report
    beside: float | None = None
    # (impl, preset, dtype, batch size) -> (training samples/s, the cell's seconds beside training)
    rates: dict[tuple[str, str, str, int], tuple[float, float]] = field(default_factory=dict)


def _cell_rates(cells) -> dict[tuple[str, str, str, int], tuple[float, float]]:
    """The newest row of each configuration among FINISHED accuracy cells (newest first): its
    median epoch rate, and its wall time less the epochs it was set to train at that rate."""
    out = {}
    for _, r in cells.iterrows():
        try:
            key = (str(r["params.impl"]), str(r["params.preset"]), str(r["params.dtype"]), int(r["params.batch_size"]))
            rate, samples = float(r["metrics.samples_per_second_median"]), float(r["metrics.train_samples"])
            epochs = int(r["params.epochs"])
        except (KeyError, TypeError, ValueError):
            continue
        if key in out or not rate > 0 or not samples > 0:
            continue
        wall = (r["end_time"] - r["start_time"]).total_seconds()
        out[key] = (rate, max(0.0, wall - epochs * samples / rate))
    return out


@timed
def earlier_durations(store: Store, mode: str) -> Durations:
    """``Durations`` from this store, for a session of ``mode`` about to start on this host."""
    session, seconds = previous_durations(store, mode)
    out = Durations(session, seconds)
    if session:
        total = store.client.get_run(session).data.metrics.get("session_seconds")
        out.beside = max(0.0, total - sum(seconds.values())) if total is not None else None
    sessions = list_sessions(store, max_results=SESSIONS_READ)
    if sessions.empty or "tags.bpb.host" not in sessions.columns:
        return out
    here = set(sessions.loc[sessions["tags.bpb.host"] == socket.gethostname(), "run_id"])
    cells = search_frame(store, "params.cell_kind = 'accuracy' and attributes.status = 'FINISHED'",
                         order_by=["attributes.start_time DESC"], max_results=5000)
    if not cells.empty and "tags.mlflow.parentRunId" in cells.columns:
        out.rates = _cell_rates(cells[cells["tags.mlflow.parentRunId"].isin(here)])
    return out
