"""Writes onto an existing run (a session's verdicts, reports and figures, after it ended)."""
from __future__ import annotations

from tracking.clock import timed
from tracking.refs import check_run_id
from tracking.store import Store


@timed
def annotate(store: Store, run_id: str, *, metrics=None, tags=None, dicts=None, files=(), artifact_path=None):
    """Write onto an existing run: metrics, tags, JSON artifacts (``{path: obj}``) and files."""
    client = store.client
    check_run_id(run_id)
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, float(value))
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    for path, obj in (dicts or {}).items():
        client.log_dict(run_id, obj, path)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)
