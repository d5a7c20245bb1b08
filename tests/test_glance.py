"""The answer at a glance: the report says first which implementation is fastest and
whether it is correct, and flags noise, skips, anomalies and budget cuts; a session shows its
progress and keeps every cell within its budget; the MLflow runs follow the UI's conventions."""
import json
import time
from pathlib import Path

import pandas as pd
import pytest

import impls
from benchmarks import budget, workers
from benchmarks.config import PRESETS
from benchmarks.gate import matrix_differences
from benchmarks.plan import BenchOptions, Cell, gate_options
from reports import answer
from reports.render import write_report
from tests import faults
from tests.helpers import PEAKS, Recorder

FIXTURE = Path(__file__).parent / "fixtures" / "report_session.json"


@pytest.fixture
def session():
    payload = json.loads(FIXTURE.read_text())
    return answer.complete(pd.DataFrame(payload["cells"])), pd.DataFrame(payload["epochs"]), payload


def ok_throughput(cells, impl):
    return cells[(cells["kind"] == "throughput") & (cells["impl"] == impl) & (cells["status"] == "FINISHED")]


def test_the_report_answers_first_and_flags_noise_skips_anomalies_budget_and_load(session, tmp_path):
    cells, epochs, payload = session
    batch = ok_throughput(cells, "numpy-batch").query("dtype == 'float32'").sort_values("batch_size")
    small, big = batch.index[0], batch.index[1]
    # an anomaly: the larger batch slower than the smaller one, IQRs apart
    cells.loc[big, ["samples_per_second_q1", "samples_per_second_median", "samples_per_second_q3"]] = (
        cells.loc[small, "samples_per_second_q1"] * pd.Series([0.3, 0.4, 0.5]).to_numpy())
    noisy_cell = ok_throughput(cells, "numba-sample").index[0]
    cells.loc[noisy_cell, "samples_per_second_relative_iqr"] = 0.6
    cells.loc[cells.index[0], "load_average_end"] = 5.0
    cut = cells[cells["kind"] == "accuracy"].index[0]
    cells.loc[cut, "budget"] = "trained on 1,000 of 60,000 samples per epoch"
    meta = {**payload["meta"], "machine": {**payload["meta"].get("machine", {}), "cpu_cores": 2}}
    paths = write_report(cells, epochs, payload["examples"], meta, tmp_path,
                         skipped=["torch-cuda: no CUDA device (torch.cuda.is_available() is False)"], speedup_base=impls.SPEEDUP_BASE, peers=impls.PEERS)
    md = paths["markdown"].read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Which implementation is fastest, and is it correct?"
    assert sections[1].startswith("## Flags (") and sections[2] == "## Cells"
    answer_lines = md.split(sections[0])[1].split(sections[1])[0].strip().splitlines()
    assert answer_lines and all("is fastest" in line or "only " in line for line in answer_lines)
    flags = md.split(sections[1])[1].split(sections[2])[0]
    assert f"noisy: {cells.loc[noisy_cell, 'cell']}: IQR of the repeats is 60% of the median" in flags
    assert f"batch {cells.loc[big, 'batch_size']}" in flags and "throughput falls as the batch grows" in flags
    assert f"{cells.loc[cells.index[0], 'cell']}: measured under load (1-minute load average up to 5.0 on 2 cores" in flags
    assert f"budget: {cells.loc[cut, 'cell']}: trained on 1,000" in flags
    assert "skipped: torch-cuda: no CUDA device" in flags
    assert "above 25% of their median" in md                             # the threshold, stated
    assert answer.ACCURACY_NOTE in md
    html = paths["html"].read_text()
    assert html.index("is fastest") < html.index("<table")               # the answer before the evidence


def test_the_headline_names_only_a_correct_cell_and_calls_a_tie_a_tie(session):
    cells, _, _ = session
    group = cells[(cells["kind"] == "throughput") & (cells["status"] == "FINISHED") & (cells["dtype"] == "float32")
                  & (cells["batch_size"] == 1)].sort_values("samples_per_second_median", ascending=False)
    winner, runner_up = group.iloc[0], group.iloc[1]
    line = next(x for x in answer.headline(cells, impls.SPEEDUP_BASE) if x.startswith("hw1-q4 f32 batch 1:"))
    assert f"**{winner['impl']}** is fastest" in line and "parity passed" in line
    failed = cells.copy()
    failed.loc[group.index[0], "status"] = "FAILED"                      # e.g. it broke parity
    line = next(x for x in answer.headline(failed, impls.SPEEDUP_BASE) if x.startswith("hw1-q4 f32 batch 1:"))
    assert f"**{runner_up['impl']}** is fastest" in line and winner["impl"] + "**" not in line
    tied = cells.copy()
    tied.loc[group.index[1], ["samples_per_second_q3"]] = winner["samples_per_second_q1"] * 1.01
    assert "a tie within noise" in next(x for x in answer.headline(tied, impls.SPEEDUP_BASE) if x.startswith("hw1-q4 f32 batch 1:"))


@pytest.mark.integration                 # trains for seconds
def test_a_cell_over_its_budget_trains_on_fewer_samples_and_says_so(fashion):
    from benchmarks import cells
    config = PRESETS["hw1-q4"].replace(impl="numpy-sample", epochs=3, train_limit=20000, test_limit=500)
    rec = Recorder()
    cells.run_group([Cell("accuracy", config)], fashion, rec, PEAKS, BenchOptions(cell_budget=0.5))
    assert [o.status for o in rec.closed] == ["FINISHED"]
    budget_tags = [t["bpb.budget"] for _, t, _ in rec.logged if "bpb.budget" in t]
    # the first says what was cut; on a loaded machine the clock may also stop it early (a second tag)
    assert budget_tags[0].startswith("trained on ") and "over the 0.5 s cell budget" in budget_tags[0], budget_tags
    metrics = {k: v for m, _, _ in rec.logged for k, v in m.items()}
    assert metrics["train_samples"] < 20000 and metrics["projected_train_seconds"] > 0.5
    assert rec.params["cell_budget_seconds"] == 0.5
    assert any(line.startswith("epoch 3/3: test accuracy") for line in rec.lines) or len(budget_tags) == 2


def test_the_clock_stops_after_the_epoch_that_would_pass_the_budget():
    class Result:
        config = PRESETS["hw1-q4"].replace(epochs=3)
        epochs = [object()]
    clock = budget.Clock(1.0)
    assert clock(Result())                                     # an instant epoch: two more fit
    clock.start -= 0.8                                         # the first epoch took 0.8 s
    assert not clock(Result()) and clock.stopped.startswith("stopped after epoch 1 of 3")
    assert budget.Clock(None)(Result())                        # no budget: never stops


@pytest.mark.integration
def test_the_main_process_beats_while_a_worker_is_silent(monkeypatch, fashion, tmp_path):
    """The worker stays silent until the recorder has had five heartbeats: without them it
    would stay silent until the guard (tests/faults.py) lets it go, and the count would be 0."""
    release = tmp_path / "release"

    class Waiting(Recorder):
        def heartbeat(self):
            super().heartbeat()
            if self.beats == 5:
                release.touch()
    monkeypatch.setattr(workers, "HEARTBEAT_SECONDS", 0.01)
    monkeypatch.setenv(workers.FAULT_ENV, "tests.faults:silent_until_released")
    monkeypatch.setenv(faults.RELEASE_ENV, str(release))
    config = PRESETS["hw1-q4"].replace(impl="numpy-sample", dtype="float32", train_limit=256, test_limit=100)
    options = BenchOptions(repeats=1, repeat_seconds=0.01)
    rec = Waiting()
    workers.run_isolated([Cell("throughput", config)], workers.Job("fashion-mnist", None, 1, PEAKS, options), rec)
    assert [o.status for o in rec.closed] == ["FINISHED"]
    assert rec.beats >= 5 and release.exists()


@pytest.mark.integration
def test_a_worker_goes_on_while_the_main_process_writes_and_waits_before_its_timed_work(
        fashion, monkeypatch, tmp_path):
    """A slow store: each cell's open is still being written when the worker has prepared
    the cell and reached its sync point (benchmarks/workers.py), which the worker marks with
    what it sent before (tests/faults.py); the write then goes on for HOLD seconds. The worker did not wait for the
    write while it prepared, and waits at its sync point until the write is done, so its timed
    passes never run beside a write; the wait, at least HOLD, is reported."""
    HOLD = 0.5
    monkeypatch.setenv(workers.FAULT_ENV, "tests.faults:marks_each_sync")
    monkeypatch.setenv(faults.MARKS_ENV, str(tmp_path))

    class SlowStore(Recorder):
        sent_before_sync = []

        def open(self, cell, params, tags):
            mark = tmp_path / str(len(self.opened) + 1)         # this cell's sync request
            deadline = time.monotonic() + faults.GUARD_SECONDS
            while not mark.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.sent_before_sync.append(mark.read_text() if mark.exists() else None)
            time.sleep(HOLD)
            super().open(cell, params, tags)
            self.logged.append(({"opened": cell.name}, {}, 0))
    config = PRESETS["hw1-q4"].replace(impl="numpy-sample", dtype="float32", train_limit=256, test_limit=100)
    cells = [Cell("throughput", config), Cell("throughput", config.replace(seed=1))]
    rec = SlowStore()
    workers.run_isolated(cells, workers.Job("fashion-mnist", None, 1, PEAKS, BenchOptions(repeats=1, repeat_seconds=0.01)),
                         rec)
    assert [o.status for o in rec.closed] == ["FINISHED", "FINISHED"]
    # every cell's messages arrive after its open and in order: the open marker, then its metrics
    names = [next(iter(m.values())) for m, _, _ in rec.logged if "opened" in m]
    assert names == [c.name for c in cells]
    # each cell's open was still being written when the worker had prepared it (its parity and
    # first call logged) and reached its sync point
    assert all(sent and "open log" in sent for sent in rec.sent_before_sync), rec.sent_before_sync
    assert all(w >= HOLD for w in rec.waits), rec.waits
    assert rec.after >= 0.0


def test_the_gate_refuses_a_session_run_with_another_schedule_or_seeds():
    matrix = gate_options()
    same = {"params.option.schedule": ",".join(map(str, matrix.schedule)), "params.option.seeds": "0,1,2",
            "params.option.dataset": "fashion-mnist"}
    assert matrix_differences(same, matrix) == []
    other = {**same, "params.option.seeds": "0", "params.option.schedule": "('hw1-q4', 3, None)"}
    differ = matrix_differences(other, matrix)
    assert len(differ) == 2 and "seeds is '0', the gate's '0,1,2'" in differ


@pytest.mark.integration
def test_the_session_follows_mlflow_conventions_and_prints_progress(dry_run):
    import mlflow
    uri, proc, _ = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("estimate: ") and "epoch 1/1: test accuracy" in proc.stdout
    assert "[1/" in proc.stdout and "viewStateShareKey=" in proc.stdout
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("backprop-bench")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags["mlflow.sharedViewState.backprop-bench-latest"])
    assert "metrics.`speedup_vs_reference`" in json.loads(view["state"])["selectedColumns"]
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags["bpb.kind"] == "session")
    cells = [r for r in runs if r.data.tags["bpb.kind"] == "cell"]
    assert "is fastest" in parent.data.tags["mlflow.note.content"]
    assert any(k.startswith("system/") for k in parent.data.metrics)          # MLflow's system metrics
    assert parent.inputs.dataset_inputs and "peak_gemm_gflops_float64" in parent.data.params
    for run in cells:
        impl, dtype = run.data.tags["implementation"], run.data.tags["dtype"]
        assert run.info.run_name.startswith(f"{impl} {dtype.replace('float', 'f')} b"), run.info.run_name
        assert {"flops_per_sample", "peak_gemm_gflops", "cell_kind"} <= set(run.data.params)
        assert not {"flops_per_sample", "peak_gemm_gflops", "repeats", "epoch"} & set(run.data.metrics)
        assert {"load_average_start", "load_average_end", "samples_per_second_relative_iqr",
                "speedup_vs_reference"} <= set(run.data.metrics), run.info.run_name
        stepped = {k for k in run.data.metrics if k.startswith(("epoch/", "repeat/"))}
        kind = run.data.tags["bpb.cell_kind"]
        assert stepped and all(k.startswith("epoch/" if kind == "accuracy" else "repeat/") for k in stepped)
