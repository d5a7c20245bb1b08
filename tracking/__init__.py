"""Everything MLflow: the tracking URI, session and cell runs, reading runs back as pandas.

``connect(uri)`` proves a store answers and returns a ``Store``: every read and write takes it.

The only package of backprop-bench that imports mlflow (lazily: ``import tracking`` is cheap).

- ``tracking.session``: a bench session as one parent run with a nested child run per cell,
  written through ``MlflowClient`` only (no fluent active-run state, so no atexit hook can end
  a run FINISHED behind the harness's back);
- ``tracking.refs``: which session ``latest``, ``latest~N`` or a run id names;
- ``tracking.schema``: a SQLite store made and migrated on a temporary file, so that an
  interrupt never leaves it half-built; ``tracking.repair`` rebuilds one that was;
- ``tracking.failure``: a failing store's cause in one line (``store_failure``);
- ``tracking.read``: sessions and artifacts read back; ``tracking.tidy``: the tidy frames
  (``CELL_COLUMNS``, ``EPOCH_COLUMNS``); ``tracking.write``: verdicts written onto an existing run.

Statuses are MLflow's: FINISHED, FAILED and KILLED, the reason in the tag
``bpb.failure_reason``.
"""
from tracking.clock import spent
from tracking.store import (DEFAULT_URI, EXPERIMENT, Store, TrackingError, connect, display_uri, resolve_uri,
                            store_failure)
from tracking.repair import check as check_store, repair as repair_store
from tracking.refs import BENCH_MODES, latest_mode, latest_session, list_sessions, resolve_ref, session_mode
from tracking.read import (all_cells, cell_runs, previous_durations,
                           read_json_artifact, read_session, repeat_series, session_meta)
from tracking.tidy import CELL_COLUMNS, EPOCH_COLUMNS, SCALING_COLUMNS, tidy, tidy_scaling
from tracking.write import annotate
from tracking.session import Session, reap_stale, ui_path
from tracking.by_machine import cells_of, latest_per_machine, session_label, sessions_by_ref
from tracking import profiles

__all__ = ["BENCH_MODES", "CELL_COLUMNS", "DEFAULT_URI", "EPOCH_COLUMNS", "EXPERIMENT", "Session", "Store", "TrackingError",
           "all_cells", "annotate", "cell_runs", "cells_of", "check_store", "connect", "display_uri", "latest_mode",
           "latest_per_machine", "latest_session", "list_sessions", "previous_durations", "read_json_artifact",
           "read_session", "reap_stale", "repair_store", "repeat_series", "resolve_ref", "resolve_uri", "session_meta",
           "profiles", "session_label", "session_mode", "sessions_by_ref", "spent", "store_failure", "tidy", "tidy_scaling", "ui_path",
           "SCALING_COLUMNS"]
