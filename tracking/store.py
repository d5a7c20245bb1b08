"""The tracking store: which URI, how it is shown, and proving it answers before any work."""
from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT = "backprop-bench"
KIND_TAG = "mlflow.experimentKind"      # the MLflow UI's switch between its model and GenAI views
EXPERIMENT_NOTE = ("backprop-bench sessions: one parent run per `python -m benchmarks bench` or `regress` "
                   "session (its description holds the headline), one child run per cell. Filter with "
                   "`tags.bpb.kind = 'session'` to see sessions only.")


class TrackingError(Exception):
    """The tracking store cannot be used; the message says which URI and how to fix it."""


def resolve_uri(cli_value: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def display_uri(uri: str) -> str:
    """``uri`` with any password masked: what every message and log line shows."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", uri)


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]).expanduser() if uri.startswith("sqlite:///") else None


def connect(uri: str, experiment: str = EXPERIMENT, *, create: bool = True) -> str:
    """Point MLflow at ``uri``, prove it answers and takes a write; returns the experiment id.

    Called before any training, so a bad store costs nothing and its real cause is named.
    HTTP stores get one quick try instead of MLflow's default minutes of retries. A sqlite
    store's first use (MLflow creates its tables then) is serialised by a file lock beside it,
    so sessions started together on a new store never leave it half-migrated. With
    ``create=False`` (report, a gate judging a session) a sqlite file must already exist.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    path = sqlite_path(uri)
    if path is None:
        return _connect(uri, experiment, None)
    if not path.parent.is_dir():
        raise TrackingError(f"tracking URI {display_uri(uri)}: folder {path.parent} does not exist; create it or "
                            "pass another --tracking-uri")
    if path.is_dir():
        raise TrackingError(f"tracking URI {display_uri(uri)}: {path} is a folder, not a database file; "
                            "name a file in it, e.g. sqlite:///" + str(path / "mlflow.db"))
    if not create and not path.exists():
        raise TrackingError(f"no tracking store at {path} (from {display_uri(uri)}): check the path, or "
                            "run `python -m benchmarks bench` to create one")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TrackingError(f"tracking URI {display_uri(uri)}: {path if path.exists() else path.parent} is "
                            "read-only; make it writable or pass another --tracking-uri")
    from filelock import FileLock, Timeout
    try:
        with FileLock(f"{path}.lock", timeout=300):
            # artifacts beside the database, not in whatever folder the command ran from
            return _connect(uri, experiment, (path.resolve().parent / "mlruns").as_uri())
    except Timeout:
        raise TrackingError(f"{path}.lock is held by another process for more than 5 minutes; "
                            "if none is running, delete the lock file") from None


_CONNECTED: dict[tuple[str, str], str] = {}   # (uri, experiment) -> id: proven once per process


def _connect(uri: str, experiment: str, artifact_location: str | None) -> str:
    import mlflow
    if (uri, experiment) in _CONNECTED:
        mlflow.set_tracking_uri(uri)           # the read helpers use MLflow's search on this URI
        return _CONNECTED[uri, experiment]
    try:
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        experiment_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location)
        if exp is None or KIND_TAG not in exp.tags:
            # without it the UI guesses, and opens an experiment of plain runs in GenAI mode
            client.set_experiment_tag(experiment_id, KIND_TAG, "custom_model_development")
            client.set_experiment_tag(experiment_id, "mlflow.note.content", EXPERIMENT_NOTE)
        # a real write (a read-only database, a full disk or a read-only server fail here)
        client.set_experiment_tag(experiment_id, "bpb.store_checked", "writable")
        _CONNECTED[uri, experiment] = experiment_id
        return experiment_id
    except Exception as exc:  # MLflow raises MlflowException, requests and SQLAlchemy errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(
            f"cannot use the MLflow tracking store at {display_uri(uri)}: {display_uri(first)}\n"
            "Check the server is running (mlflow server / tox -e ui) or pass another --tracking-uri "
            f"(default {DEFAULT_URI}; MLFLOW_TRACKING_URI is read when --tracking-uri is absent).") from None
