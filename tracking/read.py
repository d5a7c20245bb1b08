"""Reading sessions back: MLflow's frames for the report and the gate (``tracking/tidy.py``
gives them fixed columns), and artifacts. Every read validates the run id first: it goes into
MLflow's filter strings, so only 32 hexadecimal digits are accepted."""
from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tracking.clock import timed
from tracking.peaks import Peaks
from tracking.refs import check_run_id, latest_session, list_sessions
from tracking.store import EXPERIMENT, Store, TrackingError, search_frame
from tracking.tidy import EPOCH_METRICS

# histories read back: the per-epoch metrics (``epoch/*``, step = epoch), and the throughput
# repeats of the speed gate (``repeat/*``, step = repeat). Older sessions logged both
# without a prefix: they are read too, and ``read_session`` drops the ``epoch/`` prefix.
REPEAT_METRICS = ("samples_per_second", "reference_samples_per_second", "speed_ratio")
REPORT_EPOCH_METRICS = ("train_loss", "test_loss", "test_accuracy", "train_seconds")   # reports/figures.py
REPORT_REPEATS = "repeat/samples_per_second"       # a throughput cell's repeats: reports/geomean.py's intervals
HISTORY_METRICS = (*[f"epoch/{k}" for k in EPOCH_METRICS], *[f"repeat/{k}" for k in REPEAT_METRICS],
                   *dict.fromkeys(EPOCH_METRICS + REPEAT_METRICS))


@timed
def all_cells(store: Store):
    """Every cell of every session, in one query: MLflow's columns plus ``session`` (the parent
    run id). Summary metrics only; per-repeat histories are ``read_session``'s."""
    cells = search_frame(store, "tags.`bpb.kind` = 'cell'", max_results=50000)
    if not cells.empty:
        cells["session"] = cells["tags.mlflow.parentRunId"]
    return cells


@timed
def read_session(store: Store, run_id: str | None = None, for_report: bool = False):
    """(parent, cells, epochs) as pandas: the parent run's row, one row per child run
    (columns ``metrics.*``, ``params.*``, ``tags.*``, ``status``), and every per-epoch metric
    of every child in long form (run_id, key, step, value). ``for_report`` reads only what a report
    shows: the accuracy cells' epochs and the throughput cells' samples/s per repeat (the gate and
    compare read the other ``repeat/*`` series too), a server round trip each."""
    import pandas as pd
    run_id = check_run_id(run_id) if run_id else latest_session(store)
    parent = search_frame(store, f"attributes.run_id = '{run_id}'")
    if parent.empty:
        raise TrackingError(f"no run {run_id} in experiment {EXPERIMENT!r} at {store.display}")
    cells = search_frame(store, f"tags.`mlflow.parentRunId` = '{run_id}'", order_by=["attributes.start_time ASC"])
    # one history call per metric a cell has (a server round trip each), not per name it might have
    wanted = []
    kinds = cells["tags.bpb.cell_kind"] if "tags.bpb.cell_kind" in cells.columns else pd.Series("", index=cells.index)
    accuracy = set(cells.loc[kinds == "accuracy", "run_id"]) if not cells.empty else set()
    for rid in cells["run_id"] if not cells.empty else []:
        logged = set(cells.loc[cells["run_id"] == rid].filter(like="metrics.").dropna(axis=1).columns.str[8:])
        wanted += [(rid, key) for key in HISTORY_METRICS if key in logged
                   and not (key in EPOCH_METRICS and f"epoch/{key}" in logged)    # the summary twin (step 0)
                   and (not for_report or (rid in accuracy and key.removeprefix("epoch/") in REPORT_EPOCH_METRICS)
                        or (rid not in accuracy and key == REPORT_REPEATS))]

    def history(pair):
        return [{"run_id": pair[0], "key": pair[1].removeprefix("epoch/"), "step": m.step, "value": m.value}
                for m in store.client.get_metric_history(*pair)]
    # a server answers several at once: its round trips overlap (a local database gains nothing)
    with ThreadPoolExecutor(max_workers=8 if store.uri.startswith("http") else 1) as pool:
        rows = [row for part in pool.map(history, wanted) for row in part]
    epochs = pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
    return parent.iloc[0], cells, epochs


def cell_runs(store: Store, run_id: str) -> list[tuple[str, str]]:
    """(run id, cell kind) of each cell of session ``run_id``, in the order they ran."""
    runs = store.client.search_runs([store.experiment_id], order_by=["attributes.start_time ASC"],
                                    filter_string=f"tags.`mlflow.parentRunId` = '{check_run_id(run_id)}'")
    return [(r.info.run_id, r.data.tags.get("bpb.cell_kind", "")) for r in runs]


def session_meta(parent) -> dict:
    """What a report says about its session: id, status, mode, dataset, peak, inventory."""
    machine = {k[len("tags.machine."):]: v for k, v in parent.items()
               if isinstance(k, str) and k.startswith("tags.machine.")}
    peaks = Peaks.from_run(parent)
    return {"run_id": parent["run_id"], "status": parent.get("status", "?"), "mode": parent.get("params.mode", "?"),
            "reason": parent.get("tags.bpb.failure_reason") or "",
            # the record (tracking/peaks.py); the float32 peak alone for a table of sessions
            "peak_record": peaks, "peak_gemm_gflops": peaks.for_cell("float32", False).gflops,
            "machine": machine, "dataset": parent.get("tags.dataset", "?")}


def repeat_series(raw_epochs, key: str = "samples_per_second") -> dict[str, list[float]]:
    """run_id -> one value per timed repeat of metric ``key`` (``samples_per_second``,
    ``speed_ratio``, ...), in order; per-epoch series for epoch metrics (``train_loss``)."""
    out = {}
    for name in (f"repeat/{key}", key):            # the repeat/ name first; older sessions: the bare one
        rows = raw_epochs[raw_epochs["key"] == name]
        for rid, g in rows.groupby("run_id"):
            out.setdefault(rid, g.sort_values("step")["value"].tolist())
    return out


@timed
def read_json_artifact(store: Store, run_id: str, path: str) -> dict:
    """A JSON artifact of a run (``examples.json``: three test images and predictions;
    ``skipped.json``; the pytest-benchmark JSON), or {} without one."""
    with tempfile.TemporaryDirectory(prefix="bpb-") as tmp:
        try:
            local = store.client.download_artifacts(check_run_id(run_id), path, tmp)
        except Exception:  # absent artifact: MlflowException or OSError depending on the store
            return {}
        return json.loads(Path(local).read_text())


def previous_durations(store: Store, mode: str) -> tuple[str, dict[str, float]]:
    """(session id, cell name -> seconds) of the latest FINISHED session of ``mode`` on this
    host, or ("", {}): what a new session's estimate is made of."""
    import socket

    sessions = list_sessions(store, max_results=50)
    if sessions.empty or "tags.bpb.host" not in sessions.columns:
        return "", {}
    same = sessions[(sessions["status"] == "FINISHED") & (sessions.get("params.mode") == mode)
                    & (sessions["tags.bpb.host"] == socket.gethostname())]
    if same.empty:
        return "", {}
    run_id = same.iloc[0]["run_id"]
    cells = search_frame(store, f"tags.`mlflow.parentRunId` = '{run_id}'")
    if cells.empty or "tags.bpb.cell" not in cells.columns:
        return run_id, {}
    seconds = (cells["end_time"] - cells["start_time"]).dt.total_seconds()
    return run_id, dict(zip(cells["tags.bpb.cell"], seconds))

