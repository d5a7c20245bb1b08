"""The tracking store: which URI, how it is shown, and proving it answers before any work."""
from __future__ import annotations

import os
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tracking.failure as failure
import tracking.schema as schema
from tracking.clock import timed
from tracking.failure import TrackingError

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT = "backprop-bench"
KIND_TAG = "mlflow.experimentKind"      # the MLflow UI's switch between its model and GenAI views
EXPERIMENT_NOTE = ("backprop-bench sessions: one parent run per `python -m benchmarks bench` or `regress` "
                   "session (its description holds the headline), one child run per cell. Filter with "
                   "`tags.bpb.kind = 'session'` to see sessions only.")


def resolve_uri(cli_value: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def display_uri(uri: str) -> str:
    """``uri`` with any password masked: what every message and log line shows."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", uri)


@dataclass(frozen=True)
class Store:
    """A tracking store this process has proven (``connect``): every read and write takes one.

    ``uri`` is as given and may hold a password: messages show ``display``, never ``uri``."""
    uri: str
    experiment_id: str
    client: Any                 # mlflow.MlflowClient on ``uri``

    @property
    def display(self) -> str:
        return display_uri(self.uri)


def search_frame(store: Store, filter_string: str, **kwargs):
    """The store's runs matching ``filter_string`` as MLflow's pandas frame (``mlflow.search_runs``,
    which reads MLflow's current tracking URI: set to the store's first)."""
    import mlflow
    mlflow.set_tracking_uri(store.uri)
    return mlflow.search_runs(experiment_ids=[store.experiment_id], filter_string=filter_string, **kwargs)


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]).expanduser() if uri.startswith("sqlite:///") else None


@timed
def connect(uri: str, experiment: str = EXPERIMENT, *, create: bool = True) -> Store:
    """Point MLflow at ``uri``, prove it answers and takes a write; returns the ``Store``.

    Called before any training, so a bad store costs nothing and its real cause is named.
    An HTTP store gets one quick try here (``quick_probe``); every later call has MLflow's own
    retries with backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7, and
    ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, default 2: about four minutes), which carry a
    session through a server restart. A sqlite
    store's first use (its tables made) and any migration (after an MLflow upgrade) run on a
    temporary file moved into place when complete (``tracking/schema.py``), under a file lock
    beside it, so neither sessions started together nor an interrupt leave it half-built. With
    ``create=False`` (report, a gate judging a session) a sqlite file must already exist.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # on a server, MLflow prints a "View run" link at each run's end, fetching the run for it:
    # one more round trip per cell, and a line per cell; the session prints its own
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if (uri, experiment) in _CONNECTED:          # proven once per process
        return _connect(uri, experiment, None)
    path = sqlite_path(uri)
    if path is None:
        with quick_probe():
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
    from filelock import Timeout
    try:
        with store_lock(path):
            try:
                schema.prepare(path, display_uri(uri))
            except TrackingError:
                raise
            except Exception as exc:   # SQLite's and SQLAlchemy's errors, OSError (a full disk)
                raise TrackingError(failure.describe(exc, uri, display_uri(uri)) or
                                    f"cannot prepare the tracking store {path}: {exc}") from None
            failure.remember(path)
            # artifacts beside the database, not in whatever folder the command ran from
            return _connect(uri, experiment, (path.resolve().parent / "mlruns").as_uri())
    except Timeout:
        raise TrackingError(f"{path}.lock is held by another process for more than 5 minutes; "
                            "if none is running, delete the lock file") from None


def store_lock(path: Path):
    """The file lock beside a sqlite store that serialises its first use and its migrations."""
    from filelock import FileLock
    return FileLock(f"{path}.lock", timeout=300)


def store_failure(exc: BaseException) -> str | None:
    """One line naming the cause when ``exc`` is the tracking store failing (the store this
    process connected to last), else None: what the CLI prints instead of a traceback."""
    if isinstance(exc, TrackingError):
        return str(exc)
    uri = next(reversed(_CONNECTED), (None,))[0]
    return failure.describe(exc, uri, display_uri(uri)) if uri else None


# the first contact with a server: one try, 10 s, so a wrong URL or a server that is down
# fails at once; the user's own settings (or MLflow's defaults) are back afterwards
PROBE_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextmanager
def quick_probe():
    saved = {k: os.environ.get(k) for k in PROBE_SETTINGS}
    os.environ.update(PROBE_SETTINGS)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_CONNECTED: dict[tuple[str, str], Store] = {}   # (uri, experiment) -> its Store: proven once per process


def _connect(uri: str, experiment: str, artifact_location: str | None) -> Store:
    import mlflow
    failure.one_line_logs()
    if (uri, experiment) in _CONNECTED:
        mlflow.set_tracking_uri(uri)           # MLflow's fluent API reads it (search_frame)
        return _CONNECTED[uri, experiment]
    try:
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        experiment_id = exp.experiment_id if exp else _create(client, experiment, artifact_location)
        if exp is None or KIND_TAG not in exp.tags:
            # without it the UI guesses, and opens an experiment of plain runs in GenAI mode
            _set_tags(client, experiment_id, {KIND_TAG: "custom_model_development",
                                              "mlflow.note.content": EXPERIMENT_NOTE})
        # the write check: a new row, then gone again. A tag set again to a value it holds may
        # rewrite a page in place, which a nearly full disk still takes; a new row is what a
        # session writes first (its run), and needs room to grow
        check = f"bpb.store_check.{socket.gethostname()}.{os.getpid()}.{time.time_ns()}"
        client.set_experiment_tag(experiment_id, check, "a write to prove the store takes one")
        client.delete_experiment_tag(experiment_id, check)
        _CONNECTED[uri, experiment] = Store(uri, experiment_id, client)
        return _CONNECTED[uri, experiment]
    except Exception as exc:  # MLflow raises MlflowException, requests and SQLAlchemy errors
        cause = failure.describe(exc, uri, display_uri(uri))
        if cause:
            raise TrackingError(f"cannot use the MLflow tracking store at {display_uri(uri)}: {cause}") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if sqlite_path(uri) else "\n" + _hint(first, experiment)     # a file has no server to check
        raise TrackingError(f"cannot use the MLflow tracking store at {display_uri(uri)}: {display_uri(first)}"
                            + hint) from None


def _create(client, experiment: str, artifact_location: str | None) -> str:
    """Create the experiment; when another session created it first (sessions started
    together on a new server), use theirs."""
    try:
        return client.create_experiment(experiment, artifact_location)
    except Exception as exc:       # MlflowException
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(experiment).experiment_id


def _set_tags(client, experiment_id: str, tags: dict, tries: int = 3) -> None:
    """Set experiment tags. On a server, sessions started together race to insert a tag first
    and the losers get PostgreSQL's "duplicate key" (seen with 8 at once:
    tests/test_server.py); by then the tag exists and a second try updates it."""
    for key, value in tags.items():
        for attempt in range(tries):
            try:
                client.set_experiment_tag(experiment_id, key, value)
                break
            except Exception as exc:   # MlflowException wrapping the database's IntegrityError
                if "duplicate key" not in str(exc) or attempt == tries - 1:
                    raise


def _hint(message: str, experiment: str) -> str:
    """How to fix what the store answered: credentials, a permission, or the address."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if "error code 401" in message or "UNAUTHENTICATED" in message:
        return ("The server refused the credentials: check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                "(or ~/.mlflow/credentials).")
    if "error code 403" in message or "PERMISSION_DENIED" in message:
        return (f"User {user or '(none given)'} may not write to experiment {experiment!r}: ask the server's admin "
                "for EDIT on it (README.md, 'For a team'), or log in as another user.")
    return ("Check the server is running (python -m benchmarks server / tox -e ui) or pass another --tracking-uri "
            f"(default {DEFAULT_URI}; MLFLOW_TRACKING_URI is read when --tracking-uri is absent).")
