"""Which session a reference names: a run id, ``latest`` or ``latest~N``. ``latest`` is the
last FINISHED session of one kind: a bench mode (full, quick, dry-run), by default the newest
finished bench session's, so a gate session, a GPU check or a session that failed is never
``latest`` unless asked for (``mode``, ``any_status``)."""
from __future__ import annotations

import re

from tracking.clock import timed
from tracking.store import Store, TrackingError, search_frame


def check_run_id(run_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{32}", run_id or ""):
        raise TrackingError(f"{run_id!r} is not an MLflow run id (32 hexadecimal digits)")
    return run_id


@timed
def list_sessions(store: Store, max_results: int = 50000):
    """The store's sessions, newest first: one row per parent run with its status, start time,
    commit, host, mode and machine tags (MLflow's column names)."""
    return search_frame(store, "tags.`bpb.kind` = 'session'", order_by=["attributes.start_time DESC"],
                        max_results=max_results)


# the modes of a `bench` session; a gate session is "regress", a GPU check's "gpu-check"
BENCH_MODES = ("full", "quick", "dry-run")
LATEST = re.compile(r"latest(?:~(\d+))?")


def _sessions_of(store: Store, mode: str, any_status: bool, max_results: int):
    """Sessions of ``mode`` (FINISHED ones unless ``any_status``), newest first."""
    if not re.fullmatch(r"[\w-]+", mode):
        raise TrackingError(f"{mode!r} is not a session mode (letters, digits, - and _)")
    status = "" if any_status else " and attributes.status = 'FINISHED'"
    return search_frame(store, f"tags.`bpb.kind` = 'session' and params.mode = '{mode}'{status}",
                        max_results=max_results, order_by=["attributes.start_time DESC"])


def latest_mode(store: Store, any_status: bool = False) -> str | None:
    """The mode of the newest bench session (FINISHED unless ``any_status``): the kind of
    session ``latest`` means when no mode is named; None when there is none."""
    newest = [s.iloc[0] for s in (_sessions_of(store, m, any_status, 1) for m in BENCH_MODES) if not s.empty]
    return max(newest, key=lambda row: row["start_time"])["params.mode"] if newest else None


def session_mode(store: Store, run_id: str) -> str | None:
    """The mode a session ran in (``full``, ``quick``, ``dry-run``, ``regress`` ...)."""
    return store.client.get_run(check_run_id(run_id)).data.params.get("mode")


@timed
def latest_session(store: Store, mode: str | None = None, any_status: bool = False) -> str:
    """``latest``: the newest FINISHED bench session of the newest bench session's mode, or of ``mode``."""
    return resolve_ref(store, "latest", mode, any_status)


@timed
def resolve_ref(store: Store, ref: str, mode: str | None = None, any_status: bool = False) -> str:
    """A session id from ``ref``: a run id, ``latest``, or ``latest~N`` (the Nth before it).

    ``latest~N`` counts sessions of one kind only: FINISHED ones (every status with
    ``any_status``) of ``mode``, by default the mode of the newest such bench session (full,
    quick or dry-run: never a gate or a GPU check unless ``mode`` names it). A run id is taken
    as given, whatever its mode and status."""
    m = LATEST.fullmatch(ref)
    if not m:
        try:
            kind = store.client.get_run(check_run_id(ref)).data.tags.get("bpb.kind")
        except TrackingError:
            raise
        except Exception:  # MlflowException: RESOURCE_DOES_NOT_EXIST
            kind = None
        if kind != "session":
            raise TrackingError(f"{ref} is not a session in {store.display} (a cell's run id, or from "
                                "another store?); `latest` and `latest~N` name sessions too")
        return ref
    n = int(m.group(1) or 0)
    chosen = mode or latest_mode(store, any_status)
    sessions = _sessions_of(store, chosen, any_status, n + 1) if chosen else None
    if sessions is None or sessions.empty:
        raise TrackingError(f"no benchmark session {f'of mode {mode} ' if mode else '(full, quick or dry-run) '}"
                            f"{'' if any_status else 'that FINISHED '}in {store.display}"
                            + _unfinished_hint(store, any_status) + "; run `python -m benchmarks bench` first")
    if n >= len(sessions):
        raise TrackingError(f"{ref}: the store at {store.display} holds {len(sessions)} "
                            f"{'' if any_status else 'FINISHED '}{chosen} session(s)"
                            + ("" if mode else "; --mode names another kind") + _unfinished_hint(store, any_status))
    return sessions.iloc[n]["run_id"]


def _unfinished_hint(store: Store, any_status: bool) -> str:
    """Where the newest session did not finish: which it is, and that --any-status counts it."""
    if any_status:
        return ""
    newest = list_sessions(store, max_results=1)
    if newest.empty or newest.iloc[0]["status"] == "FINISHED":
        return ""
    row = newest.iloc[0]
    return (f" (the newest session, {row['run_id']}, a {row.get('params.mode', '?')} session, is "
            f"{row['status']}: --any-status counts it)")
