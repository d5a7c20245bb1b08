"""A bench session in MLflow: one parent run, one nested child run per cell.

- parent (tag ``bpb.kind = session``): the session's options as params, the machine inventory
  as tags, the report and pytest-benchmark JSON as artifacts;
- child (``bpb.kind = cell``): the whole RunConfig as params, per-epoch (or per-repeat)
  metrics with ``step``, summary metrics, tags (implementation, device, dtype, git commit,
  inventory) and the dataset as an input.

Only the harness's main process writes here; worker processes send what they measured to it
(``benchmarks/workers.py``). What to do when a cell fails is the harness's decision
(``benchmarks/cells.py``): this class records whatever status it is told.
"""
from __future__ import annotations

import json
import socket
import time
import warnings
from pathlib import Path

from tracking.procs import identity, writer_gone
from tracking.clock import timed
from tracking.store import Store

REASON_TAG = "bpb.failure_reason"
# The saved view every session updates: MLflow's Views menu lists experiment tags named
# mlflow.sharedViewState.<id>, and ?viewStateShareKey=<id> opens one. Its columns answer
# "how fast, how much faster, how accurate, how noisy, how exact, how near this machine's GEMM
# speed (the 2048^3 peak, and the net's own shapes for a CPU batch cell)" without clicking.
VIEW_ID = "backprop-bench-latest"
VIEW_COLUMNS = ["metrics.`samples_per_second_median`", "metrics.`speedup_vs_reference`", "metrics.`test_accuracy`",
                "metrics.`samples_per_second_relative_iqr`", "metrics.`parity_max_error`",
                "metrics.`roofline_fraction`", "metrics.`shape_fraction`", "metrics.`compile_seconds`", "params.`dtype`",
                "params.`batch_size`", "tags.`implementation`"]
# Pixels, where the UI's default width cuts a cell's name or the first figures of its values
VIEW_WIDTHS = {"attributes.`Run Name`": 320, "runDateAndNestInfo": 150, VIEW_COLUMNS[0]: 150, VIEW_COLUMNS[1]: 120,
               VIEW_COLUMNS[2]: 110}
# The cells' tag that names what competes (benchmarks/plan.py, Cell.configuration): the view's groups.
GROUP_TAG = "configuration"


def _flat(d: dict) -> dict[str, str]:
    return {k: (",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)) for k, v in d.items()}


class Session:
    """The parent run of a session, and the child runs of its cells, by run id."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self.experiment_id, self.client = store.experiment_id, store.client
        self.monitor = None
        # artifact path -> what this process wrote there on the parent run (a dict, or the local
        # file it uploaded): the session's own report reads these instead of downloading them
        self.written: dict[str, object] = {}

    @classmethod
    @timed
    def start(cls, store: Store, name: str, params: dict, tags: dict) -> "Session":
        reap_stale(store)
        me = identity()                       # whose run it is: reap_stale reads it
        run = store.client.create_run(store.experiment_id, run_name=name,     # tags may set another bpb.kind
                                      tags={"bpb.kind": "session", **_flat(me), **_flat(tags)})
        session = cls(store, run.info.run_id)
        session.log(params=params)
        return session

    # ---- writing ---------------------------------------------------------------------------
    @timed
    def log(self, run_id: str | None = None, *, params=None, metrics=None, tags=None, step: int = 0, points=()):
        """Params, metrics (at ``step``) and tags on the parent, or on child ``run_id``, in one
        ``log_batch`` call; ``points`` adds metric values gathered earlier, as
        (key, value, step, timestamp in ms)."""
        from mlflow.entities import Metric, Param, RunTag
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id or self.run_id,
            metrics=[Metric(k, float(v), ts, st) for k, v, st, ts in points]
            + [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None],
            params=[Param(k, v) for k, v in _flat(params or {}).items()],
            tags=[RunTag(k, v) for k, v in _flat(tags or {}).items()])

    @timed
    def open_cell(self, name: str, params: dict, tags: dict, dataset=None) -> str:
        """A RUNNING child run; returns its id. ``dataset``: ``dataset_record(...)``."""
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"bpb.kind": "cell", "mlflow.parentRunId": self.run_id, **_flat(tags)})
        run_id = run.info.run_id
        self.log(run_id, params=params)
        if dataset is not None:
            self.log_dataset(dataset, run_id)
        return run_id

    @timed
    def end_cell(self, run_id: str, status: str, reason: str | None = None, details: str | None = None):
        """End a child run with MLflow's ``status``; a reason and details go with any but FINISHED."""
        if reason:
            self.client.set_tag(run_id, REASON_TAG, reason[:5000])
        if details:
            self.client.log_text(run_id, details, "failure.txt")
        self.client.set_terminated(run_id, status)

    @timed
    def close_running_cells(self, status: str, reason: str) -> int:
        """End every child still RUNNING (a worker died or the session was stopped); returns
        how many there were."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}' "
                                                     "and attributes.status = 'RUNNING'")
        for run in runs:
            self.end_cell(run.info.run_id, status, reason)
        return len(runs)

    def monitor_system(self, seconds: float) -> str:
        """MLflow's own system metrics (``system/*``: CPU, memory, disk, network, GPU where
        there is one) on the parent run, sampled every ``seconds`` until ``finish``. Returns
        what it does, in words; a machine without psutil runs on without them."""
        import logging
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)   # no INFO chatter
            self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=seconds, samples_before_logging=1,
                                                tracking_uri=self.store.uri)
        except ImportError as exc:
            return f"off ({exc})"
        self.monitor.start()
        return f"every {seconds:g} s on the session's run"

    @timed
    def publish_view(self) -> str:
        """Point the saved view (``VIEW_ID``) at this session and return the UI's address of
        it, from the server's root (the workflowType makes a browser that never opened MLflow
        start on runs, not GenAI).

        The view shows the session's cells as rows with the columns of ``VIEW_COLUMNS``,
        grouped by their ``GROUP_TAG``, the fastest first in each group; a group's row holds
        the best value of its cells (max). Sorted by start time, or not sorted, MLflow's UI
        (3.17) would nest the cells under their parent run, collapsed, and a shared view
        cannot expand it (``runsExpanded`` is not shared): hence the sort by speed. The view's
        state is the JSON of the UI's own keys (``searchFilter``, ``orderByKey``,
        ``selectedColumns``, ``columnWidths``, ``groupBy`` ...)."""
        now = int(time.time() * 1000)
        state = {"searchFilter": f"tags.`mlflow.parentRunId` = '{self.run_id}'",   # its cells, flat
                 "orderByKey": VIEW_COLUMNS[0], "orderByAsc": False,
                 "selectedColumns": VIEW_COLUMNS, "columnOrder": [*VIEW_WIDTHS, *VIEW_COLUMNS[3:]],
                 "columnWidths": VIEW_WIDTHS}
        cell = self.client.search_runs([self.experiment_id], max_results=1,
                                       filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}'")
        if cell and GROUP_TAG in cell[0].data.tags:        # sessions recorded before it are shown flat
            state["groupBy"] = {"aggregateFunction": "max", "groupByKeys": [{"mode": "tag", "groupByData": GROUP_TAG}]}
        name = self.client.get_run(self.run_id).info.run_name
        view = json.dumps({"name": f"backprop-bench: {name}", "createdAt": now, "updatedAt": now,
                           "state": json.dumps(state)})
        _won_race(lambda: self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{VIEW_ID}", view))
        return ui_path(self.experiment_id)

    @timed
    def log_dataset(self, dataset, run_id: str | None = None):
        """The dataset record (``dataset_record``) as an input of the run."""
        from mlflow.entities import DatasetInput, InputTag
        inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])]
        _won_race(lambda: self.client.log_inputs(run_id or self.run_id, inputs))

    @timed
    def finish(self, status: str = "FINISHED", reason: str | None = None):
        """End the parent run with ``status`` (children left RUNNING get the same). Each step is
        tried even when one before it failed, the run's own status last, so a failing step (the
        system-metrics monitor, one child's write) cannot leave the session RUNNING; the first
        failure is raised afterwards."""
        failures = []

        def attempt(step) -> None:
            try:
                step()
            except Exception as exc:
                failures.append(exc)

        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            attempt(monitor.finish)
        if status != "FINISHED":
            attempt(lambda: self.close_running_cells(status, reason or status.lower()))
        if reason:
            attempt(lambda: self.client.set_tag(self.run_id, REASON_TAG, reason[:5000]))
        self.client.set_terminated(self.run_id, status)
        if failures:
            raise failures[0]

    @timed
    def log_artifact(self, path, artifact_path: str | None = None):
        self.client.log_artifact(self.run_id, str(path), artifact_path)
        self.written["/".join(filter(None, [artifact_path, Path(path).name]))] = Path(path)

    @timed
    def log_dict(self, obj: dict, artifact_file: str, run_id: str | None = None):
        self.client.log_dict(run_id or self.run_id, obj, artifact_file)
        if run_id in (None, self.run_id):
            self.written[artifact_file] = obj

    @timed
    def log_text(self, text: str, artifact_file: str, run_id: str | None = None):
        self.client.log_text(run_id or self.run_id, text, artifact_file)


def ui_path(experiment_id: str) -> str:
    """The MLflow UI's address of the latest session's view, from the server's root."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_ID}&workflowType=machine_learning"


@timed
def reap_stale(store: Store) -> list[str]:
    """Runs of any kind (sessions, history, machines) left RUNNING by a process that is gone
    (kill -9, a crash): end them and their RUNNING cells KILLED, saying so. Only runs whose
    writer this machine can see are judged (``tracking/procs.py``, ``writer_gone``): a live
    run, or one on another machine with the same host name, is never touched. Returns the run
    ids ended."""
    host = socket.gethostname()
    runs = store.client.search_runs([store.experiment_id], filter_string="attributes.status = 'RUNNING' and "
                                    f"tags.`bpb.host` = '{host}'")
    ended = []
    for run in runs:
        if not writer_gone(run.data.tags):
            continue
        stale = Session(store, run.info.run_id)
        stale.finish("KILLED", f"stale: its process (pid {run.data.tags['bpb.pid']} on {host}) is gone; "
                               "it never finished")
        ended.append(run.info.run_id)
    return ended


@timed
def dataset_record(features, targets, name: str, digest: str, source: str):
    """An MLflow dataset record (name, digest, source folder, schema); no data is copied."""
    import mlflow.data
    with warnings.catch_warnings():   # "source can be interpreted in multiple ways": it is a local folder
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_numpy(features, targets=targets, name=name, digest=digest, source=source)


def _won_race(call, attempts: int = 3):
    """``call()``, again where it lost a race to insert the same row. Sessions started together
    insert the same dataset row, or the same experiment tag (the saved view), at once: the losers
    hit the unique key (SQLite: "UNIQUE constraint failed"; PostgreSQL: "duplicate key"; seen in
    CI, tests/test_commands.py and tests/test_server.py's eight sessions). By then the row
    exists, and the retry updates it."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:   # MlflowException wrapping the database's IntegrityError
            if not any(s in str(exc) for s in ("UNIQUE constraint", "duplicate key", "IntegrityError")) \
                    or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
