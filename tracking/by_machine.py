"""Sessions by machine: the label each session carries (tag ``bpb.machine``, else its host
for sessions recorded before labels existed), and the sessions a cross-machine report reads."""
from __future__ import annotations

from tracking.clock import timed
from tracking.read import all_cells
from tracking.tidy import CELL_COLUMNS, tidy
from tracking.refs import latest_mode, list_sessions, resolve_ref
from tracking.store import Store, TrackingError


def session_label(parent) -> str:
    """One session's machine label, from its parent row: the tag ``bpb.machine``, else its host."""
    return str(parent.get("tags.bpb.machine") or parent.get("tags.bpb.host") or "?")


def _labelled(sessions):
    none = sessions.get("tags.bpb.host")
    label = sessions["tags.bpb.machine"] if "tags.bpb.machine" in sessions.columns else none
    return sessions.assign(machine=label.fillna(none) if none is not None else label)


@timed
def latest_per_machine(store: Store, mode: str | None = None):
    """The newest FINISHED session of each machine, of one mode (default: the mode of the
    newest FINISHED bench session, so every machine ran the same matrix); list_sessions' columns
    plus ``machine``, one row per machine."""
    sessions = list_sessions(store)
    done = sessions[sessions["status"] == "FINISHED"] if not sessions.empty else sessions
    if done.empty:
        raise TrackingError(f"no finished session in {store.display}; run `python -m benchmarks bench` first")
    mode = mode or latest_mode(store) or done.iloc[0].get("params.mode")
    done = _labelled(done[done.get("params.mode") == mode])
    if done.empty:
        raise TrackingError(f"no finished session of mode {mode!r} in {store.display}")
    return done.drop_duplicates("machine", keep="first").reset_index(drop=True)


@timed
def sessions_by_ref(store: Store, refs: list[str], mode: str | None = None, any_status: bool = False):
    """The sessions named by ``refs`` (ids, ``latest``, ``latest~N``: ``resolve_ref``), in that
    order, with ``machine``."""
    ids = list(dict.fromkeys(resolve_ref(store, ref, mode, any_status) for ref in refs))
    sessions = list_sessions(store)
    rows = sessions.set_index("run_id").loc[ids].reset_index()
    return _labelled(rows)


@timed
def cells_of(store: Store, sessions):
    """The tidy cells (``CELL_COLUMNS``) of ``sessions`` in one query, with ``session`` and
    ``machine``; a label that two sessions share gets the session's short id after it."""
    import pandas as pd
    names = sessions["machine"].where(~sessions["machine"].duplicated(keep=False),
                                      sessions["machine"] + "@" + sessions["run_id"].str[:8])
    machine_of = dict(zip(sessions["run_id"], names))
    raw = all_cells(store)
    raw = raw[raw["session"].isin(machine_of)].sort_values("start_time") if not raw.empty else raw   # run order
    if raw.empty:
        return pd.DataFrame(columns=CELL_COLUMNS + ["session", "machine"]), names.tolist()
    cells, _ = tidy(raw, pd.DataFrame(columns=["run_id", "key", "step", "value"]))
    cells["session"] = cells["run_id"].map(dict(zip(raw["run_id"], raw["session"])))
    cells["machine"] = cells["session"].map(machine_of)
    order = {m: i for i, m in enumerate(names)}
    return cells.sort_values("machine", key=lambda s: s.map(order), kind="stable").reset_index(drop=True), names.tolist()
