"""The tracking store: which URI, how it is shown, and proving it answers before any work."""
from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT = "backprop-bench"


class TrackingError(Exception):
    """The tracking store cannot be used; the message says which URI and how to fix it."""


def resolve_uri(cli_value: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def display_uri(uri: str) -> str:
    """``uri`` with any password masked: what every message and log line shows."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", uri)


def connect(uri: str, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at ``uri`` and prove it answers; returns the experiment id.

    Called before any training, so a bad URI costs nothing. HTTP stores get one quick try
    instead of MLflow's default minutes of retries.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).expanduser().parent
        if not folder.is_dir():
            raise TrackingError(f"tracking URI {display_uri(uri)}: folder {folder} does not exist; create it or "
                                "pass another --tracking-uri")
    try:
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        return exp.experiment_id if exp else client.create_experiment(experiment)
    except Exception as exc:  # MLflow raises MlflowException, requests and SQLAlchemy errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(
            f"cannot use the MLflow tracking store at {display_uri(uri)}: {display_uri(first)}\n"
            "Check the server is running (mlflow server / tox -e ui) or pass another --tracking-uri "
            f"(default {DEFAULT_URI}; MLFLOW_TRACKING_URI is read when --tracking-uri is absent).") from None
