"""Everything MLflow: the tracking URI, session and cell runs, reading runs back as pandas.

The only package of backprop-bench that imports mlflow. Layout of a benchmark session:

- one parent run (tag ``bpb.kind = session``) with the machine inventory as tags, the session's
  options as params, the report and pytest-benchmark JSON as artifacts;
- one nested child run per cell (``bpb.kind = cell``): the whole RunConfig as params, per-epoch
  metrics with ``step = epoch``, summary metrics, tags (implementation, device, dtype, git
  commit, inventory) and the dataset through ``mlflow.log_input``.

A child that raises is ended FAILED with its reason (tag ``bpb.failure_reason``) and the
session goes on; Ctrl-C ends the current child and the session KILLED and re-raises.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import traceback
import warnings
from pathlib import Path

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT = "backprop-bench"
# histories read back: the per-epoch metrics, and the throughput repeats of the speed gate
HISTORY_METRICS = ("train_loss", "test_loss", "test_accuracy", "epoch_seconds", "samples_per_second",
                   "train_seconds", "reference_samples_per_second", "speed_ratio")
EPOCH_METRICS = ("train_loss", "test_loss", "test_accuracy", "epoch_seconds", "samples_per_second",
                 "train_seconds")


class TrackingError(Exception):
    """The tracking store cannot be used; the message says which URI and how to fix it."""


def resolve_uri(cli_value: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


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
            raise TrackingError(f"tracking URI {uri}: folder {folder} does not exist; create it or "
                                "pass another --tracking-uri")
    try:
        mlflow.set_tracking_uri(uri)
        exp = mlflow.get_experiment_by_name(experiment)
        return exp.experiment_id if exp else mlflow.create_experiment(experiment)
    except Exception as exc:  # MLflow raises MlflowException, requests and SQLAlchemy errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(
            f"cannot use the MLflow tracking store at {uri}: {first}\n"
            "Check the server is running (mlflow server / tox -e ui) or pass another --tracking-uri "
            f"(default {DEFAULT_URI}; MLFLOW_TRACKING_URI is read when --tracking-uri is absent).") from None


def _flat(d: dict) -> dict[str, str]:
    return {k: (",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)) for k, v in d.items()}


class Session:
    """A parent run. ``start`` creates it (the main process); ``attach`` binds to it from a
    worker process, which then opens the nested child runs with ``cell()``."""

    def __init__(self, uri: str, run_id: str, experiment_id: str):
        import mlflow
        self.mlflow = mlflow
        self.uri, self.run_id, self.experiment_id = uri, run_id, experiment_id
        self.client = mlflow.MlflowClient(uri)

    @classmethod
    def start(cls, uri: str, name: str, params: dict, tags: dict) -> "Session":
        import mlflow
        experiment_id = connect(uri)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=name,
                               tags={"bpb.kind": "session", **_flat(tags)})
        session = cls(uri, run.info.run_id, experiment_id)
        session._log(session.run_id, params=params)
        return session

    @classmethod
    def attach(cls, uri: str, run_id: str) -> "Session":
        import mlflow
        connect(uri)
        run = mlflow.MlflowClient(uri).get_run(run_id)
        return cls(uri, run_id, run.info.experiment_id)

    def _log(self, run_id, params=None, metrics=None, tags=None, step=0):
        from mlflow.entities import Metric, Param, RunTag
        import time
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None],
            params=[Param(k, v) for k, v in _flat(params or {}).items()],
            tags=[RunTag(k, v) for k, v in _flat(tags or {}).items()])

    @contextlib.contextmanager
    def cell(self, name: str, params: dict, tags: dict, dataset=None):
        """A nested child run; yields a ``CellRun``. Exceptions end it FAILED and are swallowed
        (the session goes on); KeyboardInterrupt ends it KILLED and propagates."""
        mlflow = self.mlflow
        run = mlflow.start_run(experiment_id=self.experiment_id, run_name=name, parent_run_id=self.run_id,
                               nested=mlflow.active_run() is not None, tags={"bpb.kind": "cell", **_flat(tags)})
        cell = CellRun(self, run.info.run_id)
        try:
            self._log(cell.run_id, params=params)
            if dataset is not None:
                mlflow.log_input(dataset, context="training")
            yield cell
        except KeyboardInterrupt:
            self._end(cell.run_id, "KILLED", "interrupted by the user (Ctrl-C)")
            raise
        except Exception as exc:
            cell.failed = f"{type(exc).__name__}: {exc}"
            self._end(cell.run_id, "FAILED", cell.failed, traceback.format_exc())
        else:
            if cell.failed:
                self._end(cell.run_id, "FAILED", cell.failed)
            else:
                mlflow.end_run("FINISHED")

    def _end(self, run_id, status, reason, details=None):
        self.client.set_tag(run_id, "bpb.failure_reason", reason[:5000])
        if details:
            self.client.log_text(run_id, details, "failure.txt")
        self.mlflow.end_run(status)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None):
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log(self, metrics=None, tags=None, params=None):
        self._log(self.run_id, params=params, metrics=metrics, tags=tags)

    def finish(self, status: str = "FINISHED", reason: str | None = None):
        """End the parent run (and any child left open) with ``status``."""
        if reason:
            self.client.set_tag(self.run_id, "bpb.failure_reason", reason)
        while self.mlflow.active_run() is not None:
            self.mlflow.end_run(status)
        if self.client.get_run(self.run_id).info.status == "RUNNING":
            self.client.set_terminated(self.run_id, status)


class CellRun:
    def __init__(self, session: Session, run_id: str):
        self.session, self.run_id = session, run_id
        self.failed: str | None = None

    def log(self, metrics=None, tags=None, step=0):
        self.session._log(self.run_id, metrics=metrics, tags=tags, step=step)

    def fail(self, reason: str):
        """Record the cell as FAILED with ``reason`` when its block ends (no exception needed)."""
        self.failed = reason


def numpy_dataset(features, targets, name: str, digest: str, source: str):
    """An MLflow dataset record (name, digest, source folder, schema); no data is copied."""
    import mlflow.data
    with warnings.catch_warnings():   # "source can be interpreted in multiple ways": it is a local folder
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_numpy(features, targets=targets, name=name, digest=digest, source=source)


# ---- reading back ------------------------------------------------------------------------
def latest_session(uri: str) -> str:
    import mlflow
    connect(uri)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="tags.`bpb.kind` = 'session'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if runs.empty:
        raise TrackingError(f"no benchmark session in {uri}; run `python -m benchmarks bench` first")
    return runs.iloc[0]["run_id"]


def read_session(uri: str, run_id: str | None = None):
    """(parent, cells, epochs) as pandas: the parent run's row, one row per child run
    (columns ``metrics.*``, ``params.*``, ``tags.*``, ``status``), and every per-epoch metric
    of every child in long form (run_id, key, step, value)."""
    import mlflow
    import pandas as pd
    connect(uri)
    run_id = run_id or latest_session(uri)
    parent = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=f"attributes.run_id = '{run_id}'")
    if parent.empty:
        raise TrackingError(f"no run {run_id} in experiment {EXPERIMENT!r} at {uri}")
    cells = mlflow.search_runs(experiment_names=[EXPERIMENT],
                               filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'",
                               order_by=["attributes.start_time ASC"])
    client = mlflow.MlflowClient(uri)
    rows = []
    for rid in cells["run_id"] if not cells.empty else []:
        for key in HISTORY_METRICS:
            for m in client.get_metric_history(rid, key):
                rows.append({"run_id": rid, "key": key, "step": m.step, "value": m.value})
    epochs = pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
    return parent.iloc[0], cells, epochs


def download_artifact(uri: str, run_id: str, path: str, dst: str | None = None) -> str | None:
    """Local path of one artifact of ``run_id``, or None when it does not exist."""
    import mlflow
    client = mlflow.MlflowClient(uri)
    try:
        return client.download_artifacts(run_id, path, dst or tempfile.mkdtemp(prefix="bpb-"))
    except Exception:  # absent artifact: MlflowException or OSError depending on the store
        return None


# ---- the tidy frames reports/ consumes ----------------------------------------------------
CELL_COLUMNS = ["run_id", "cell", "kind", "impl", "device", "preset", "dataset", "network", "dtype",
                "batch_size", "seed", "status", "reason", "samples_per_second_median",
                "samples_per_second_q1", "samples_per_second_q3", "roofline_fraction",
                "compile_seconds", "test_accuracy", "time_to_target_seconds", "target_accuracy",
                "parity_max_error", "flops_per_sample"]
EPOCH_COLUMNS = ["run_id", "cell", "impl", "preset", "dtype", "batch_size", "seed", "epoch",
                 *EPOCH_METRICS]


def tidy(cells, epochs):
    """MLflow's frames -> (cells, epochs) with the fixed columns above, one row per cell and
    one row per (accuracy cell, epoch)."""
    import numpy as np
    import pandas as pd

    def col(name, default=np.nan):
        return cells[name] if name in cells.columns else pd.Series(default, index=cells.index)

    out = pd.DataFrame({
        "run_id": col("run_id"),
        "cell": col("tags.bpb.cell"),
        "kind": col("tags.bpb.cell_kind"),
        "impl": col("tags.implementation"),
        "device": col("tags.device"),
        "preset": col("params.preset"),
        "dataset": col("params.dataset"),
        "network": col("params.sizes").astype(str).str.replace(",", "-") + " " + col("params.activation").astype(str),
        "dtype": col("params.dtype"),
        "batch_size": pd.to_numeric(col("params.batch_size"), errors="coerce").astype("Int64"),
        "seed": pd.to_numeric(col("params.seed"), errors="coerce").astype("Int64"),
        "status": col("status"),
        "reason": col("tags.bpb.failure_reason", None),
        "samples_per_second_median": col("metrics.samples_per_second_median"),
        "samples_per_second_q1": col("metrics.samples_per_second_q1"),
        "samples_per_second_q3": col("metrics.samples_per_second_q3"),
        "roofline_fraction": col("metrics.roofline_fraction"),
        "compile_seconds": col("metrics.compile_seconds"),
        "test_accuracy": col("metrics.test_accuracy"),
        "time_to_target_seconds": col("metrics.time_to_target_seconds"),
        "target_accuracy": pd.to_numeric(col("params.target_accuracy"), errors="coerce"),
        "parity_max_error": col("metrics.parity_max_error"),
        "flops_per_sample": col("metrics.flops_per_sample"),
    }, columns=CELL_COLUMNS).reset_index(drop=True)
    if epochs.empty or out.empty:
        return out, pd.DataFrame(columns=EPOCH_COLUMNS)
    accuracy_ids = set(out.loc[out["kind"] == "accuracy", "run_id"])
    long = epochs[epochs["run_id"].isin(accuracy_ids)]
    wide = long.pivot_table(index=["run_id", "step"], columns="key", values="value", aggfunc="last").reset_index()
    wide = wide.rename(columns={"step": "epoch"})
    meta = out[["run_id", "cell", "impl", "preset", "dtype", "batch_size", "seed"]]
    merged = meta.merge(wide, on="run_id")
    for key in EPOCH_METRICS:
        if key not in merged.columns:
            merged[key] = np.nan
    return out, merged[EPOCH_COLUMNS].sort_values(["cell", "epoch"]).reset_index(drop=True)
