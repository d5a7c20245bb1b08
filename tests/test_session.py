"""The bench session end to end: logged schema, faults, interrupts, bad tracking URIs, and
the MLflow UI's conventions and the progress it prints."""
import json
import os
import signal
import subprocess
import time
from dataclasses import fields
from pathlib import Path

import pytest

import impls
from benchmarks.threads import all_cores
from benchmarks.plan import BenchOptions
from benchmarks.config import RunConfig
from tests.helpers import SESSION_ENV, is_outcome, run_cli, start_cli

mlflow = pytest.importorskip("mlflow")


def runs_of(uri):
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("backprop-bench")
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id], max_results=10000)
    parents = df[df["tags.bpb.kind"] == "session"]
    children = df[df["tags.bpb.kind"] == "cell"]
    return client, parents, children


@pytest.mark.integration
def test_dry_run_through_the_cli_logs_the_whole_schema(tmp_path, fashion, dry_run):
    uri, proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parents, children = runs_of(uri)
    assert len(parents) == 1 and parents["status"].iat[0] == "FINISHED"
    parent = parents.iloc[0]
    assert (children["tags.mlflow.parentRunId"] == parent["run_id"]).all()
    scaling = children[children["tags.bpb.cell_kind"] == "scaling"]      # tests/test_scaling.py reads them
    assert len(scaling) == (5 if all_cores() >= 2 else 0)
    children = children[children["tags.bpb.cell_kind"] != "scaling"]
    available = [n for n, why in impls.available().items() if why is None and n not in impls.OPT_IN]
    assert set(children["tags.implementation"]) == set(available)
    assert (children["status"] == "FINISHED").all()
    # params: the whole RunConfig, flat
    for f in fields(RunConfig):
        assert children[f"params.{f.name}"].notna().all(), f.name
    # tags: implementation, device, dtype, git commit, machine inventory with BLAS and threads
    for tag in ("implementation", "device", "dtype", "git_commit", "machine.cpu_model", "machine.cpu_cores",
                "machine.gpu", "machine.blas", "machine.threads_blas", "machine.version_numpy", "bpb.cell"):
        assert children[f"tags.{tag}"].notna().all(), tag
    assert parent["tags.machine.blas"] and float(parent["params.peak_gemm_gflops_float32"]) > 0
    # the thread count: chosen (no --threads), with its reason, in the first lines and on the session
    assert int(parent["params.threads"]) >= 1 and parent["params.threads_reason"] != "--threads given"
    assert parent["tags.bpb.threads_reason"].startswith(parent["params.threads_reason"][:100])
    assert f"threads {parent['params.threads']}: " in "\n".join(proc.stdout.splitlines()[:3])
    # what its workers inherited: the thread settings it was started with, nothing added (a passive
    # wait the harness once set halved torch-cpu's quiet rate: docs/performance.md, "The workers' environment")
    started_with = json.loads((report.parent / "thread_env.json").read_text())    # tests/conftest.py dry_run
    given = " ".join(f"{k}={v}" for k, v in started_with.items()) or "unset"
    assert parent["tags.machine.thread_env"] == given
    # an implementation's own choices (Implementation.details) are params of its cells
    torch_cells = children[children["tags.implementation"] == "torch-cpu"]
    assert (torch_cells["params.impl.optimizer_kernel"] == "fused").all() and len(torch_cells)
    # summary metrics on every cell, time-to-target or its reason on accuracy cells
    for metric in ("compile_seconds", "parity_max_error", "samples_per_second_median", "samples_per_second_q1",
                   "samples_per_second_q3", "roofline_fraction"):
        assert children[f"metrics.{metric}"].notna().all(), metric
    assert (children["metrics.roofline_fraction"] > 0).all()
    # the shape peak (benchmarks/shape_peaks.py): each batch cell on the CPU has its fraction and its
    # peak, a per-sample cell neither; the session holds every shape peak it measured
    batch = children[children["params.batch_size"].astype(int) > 1]
    assert len(batch) and (batch["metrics.shape_fraction"] > 0).all()
    shape_peaks = {name: parent[name] for name in parent.index if name.startswith("metrics.shape_peak/")}
    for _, cell in batch.iterrows():
        key = f"{cell['params.sizes'].replace(',', '-')}_b{cell['params.batch_size']}_{cell['params.dtype']}"
        assert float(cell["params.shape_peak_gflops"]) == pytest.approx(shape_peaks[f"metrics.shape_peak/{key}/gflops"], abs=0.06)
    per_sample = children[children["params.batch_size"].astype(int) == 1]
    assert per_sample["metrics.shape_fraction"].isna().all() and (per_sample["params.shape_peak_gflops"] == "nan").all()
    acc = children[children["tags.bpb.cell_kind"] == "accuracy"]
    assert len(acc) >= len(available)
    for rid in acc["run_id"]:
        for key in ("train_loss", "test_loss", "test_accuracy", "epoch_seconds", "samples_per_second"):
            assert [m.step for m in client.get_metric_history(rid, f"epoch/{key}")] == [1], key
        run = client.get_run(rid)
        assert "metrics.time_to_target_seconds" in acc.columns or "bpb.time_to_target" in run.data.tags
        ds = run.inputs.dataset_inputs[0].dataset
        assert ds.name == "fashion-mnist" and ds.digest == fashion.digest
    thr = children[children["tags.bpb.cell_kind"] == "throughput"]
    for rid in thr["run_id"]:
        assert len(client.get_metric_history(rid, "repeat/samples_per_second")) == 3      # repeats
    # report files on disk and attached to the parent run
    artifacts = {a.path for a in client.list_artifacts(parent["run_id"], "report")}
    for name in ("report.md", "report.html", "throughput.png", "accuracy.png", "loss.png", "examples.png"):
        assert (report / "latest" / name).is_file()
        assert f"report/{name}" in artifacts
    assert "examples.json" in {a.path for a in client.list_artifacts(parent["run_id"])}
    # the report command reads the same session back
    proc = run_cli("report", "--tracking-uri", uri, "--output-dir", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again" / parent["run_id"] / "report.html").is_file()
    assert (tmp_path / "again" / "latest").resolve() == (tmp_path / "again" / parent["run_id"]).resolve()


@pytest.mark.integration
def test_failed_cells_are_recorded_and_the_session_goes_on(tmp_path, fashion, monkeypatch):
    """A NaN loss, an exception and a wrong update, each in a worker process of its own."""
    import tracking
    from benchmarks.session import SessionSettings, run_session
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = BenchOptions.make("dry-run", presets=("hw1-q4",), impls=("numpy-sample", "numpy-batch", "numba-batch",
                                                                       "torch-cpu"), batch_sizes=(1,))
    monkeypatch.setenv("BPB_FAULT", "tests.faults:nan_loss_and_raise")
    settings = SessionSettings(out_dir=str(tmp_path / "report"), mode="dry-run", threads=2)
    rc, _ = run_session(options, fashion, tracking.connect(uri), settings, log=lambda *a: None)
    assert rc == 1
    client, parents, children = runs_of(uri)
    assert parents["status"].tolist() == ["FINISHED"]
    by_impl = children.groupby("tags.implementation")
    assert set(by_impl.get_group("numpy-sample")["status"]) == {"FINISHED"}
    assert by_impl.get_group("numpy-sample")["metrics.samples_per_second_median"].notna().all()
    nan = by_impl.get_group("numpy-batch")
    assert set(nan["status"]) == {"FAILED"} and nan["tags.bpb.failure_reason"].str.contains("diverged").all()
    boom = by_impl.get_group("torch-cpu")
    assert set(boom["status"]) == {"FAILED"}
    assert boom["tags.bpb.failure_reason"].str.contains("RuntimeError: injected failure").all()
    assert "failure.txt" in {a.path for a in client.list_artifacts(boom["run_id"].iat[0])}
    wrong = by_impl.get_group("numba-batch")
    assert set(wrong["status"]) == {"FAILED"}
    assert wrong["tags.bpb.failure_reason"].str.startswith("parity check failed").all()
    assert wrong["metrics.samples_per_second_median"].isna().all()              # never timed
    assert (tmp_path / "report" / "latest" / "report.md").is_file()


@pytest.mark.integration
def test_a_worker_that_dies_fails_its_cells_and_the_session_goes_on(tmp_path, fashion, monkeypatch):
    import tracking
    from benchmarks.session import SessionSettings, run_session
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = BenchOptions.make("dry-run", presets=("hw1-q4",), impls=("numpy-batch", "numpy-sample"), batch_sizes=(1,))
    monkeypatch.setenv("BPB_FAULT", "tests.faults:die_in_numpy_batch")
    lines = []
    settings = SessionSettings(out_dir=str(tmp_path / "report"), mode="dry-run", threads=2)
    rc, _ = run_session(options, fashion, tracking.connect(uri), settings, log=lines.append)
    assert rc == 1
    client, parents, children = runs_of(uri)
    assert parents["status"].tolist() == ["FINISHED"]
    dead = children[children["tags.implementation"] == "numpy-batch"]
    assert dead["status"].tolist() == ["FAILED"]                           # the cell in flight
    assert dead["tags.bpb.failure_reason"].str.contains("worker process died .exit code 9.").all()
    assert any("never started" in line for line in lines)                  # its later cells, no run
    assert lines[1].startswith("threads 2: --threads given")               # the caller's count wins
    assert parents["params.threads"].tolist() == ["2"] and parents["params.threads_reason"].tolist() == ["--threads given"]
    assert set(children[children["tags.implementation"] == "numpy-sample"]["status"]) == {"FINISHED"}
    assert not (children["status"] == "RUNNING").any()


@pytest.mark.integration
def test_a_stopped_worker_is_ended_and_its_cell_failed_no_progress(tmp_path, fashion):
    """A worker stopped by SIGSTOP sends nothing: after the no-progress limit (here 3 s, from
    the environment; by default 3 cell budgets) it is killed, its cell FAILED 'no progress',
    and the next implementation's cells still run. Before the limit existed, the session
    waited forever."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("bench", "--dry-run", "--impl", "numpy-batch,numpy-sample", "--presets", "hw1-q4",
                   "--tracking-uri", uri, "--output-dir", str(tmp_path / "report"), timeout=300,
                   env={"CI": "1", "BPB_FAULT": "tests.faults:stop_in_numpy_batch", "BPB_NO_PROGRESS_SECONDS": "3"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    _, parents, children = runs_of(uri)
    assert parents["status"].tolist() == ["FINISHED"]
    stopped = children[children["tags.implementation"] == "numpy-batch"]
    assert "FAILED" in set(stopped["status"])
    assert stopped["tags.bpb.failure_reason"].str.contains("no progress: the worker sent nothing for 3 s").any()
    assert set(children[children["tags.implementation"] == "numpy-sample"]["status"]) == {"FINISHED"}
    stopped_left = []                     # no stopped worker of this test left behind (state T)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
            environ = (stat.parent / "environ").read_bytes()
        except OSError:
            continue
        if state == "T" and b"stop_in_numpy_batch" in environ:
            stopped_left.append(stat.parent.name)
    assert not stopped_left


@pytest.mark.integration
def test_ctrl_c_marks_the_current_run_killed_and_keeps_finished_ones(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = start_cli("bench", "--dry-run", "--tracking-uri", uri, "--output-dir", str(tmp_path / "r"), "--impl",
                     "numpy-sample,numpy-batch", env=SESSION_ENV, stderr=subprocess.STDOUT, start_new_session=True)
    seen, deadline = [], time.time() + 300
    for line in proc.stdout:
        if is_outcome(line):
            seen.append(line)
        if len(seen) == 2 or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)                # what Ctrl-C sends: the whole process group
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, out
    assert "interrupted" in out and "Traceback" not in out
    client, parents, children = runs_of(uri)
    assert parents["status"].tolist() == ["KILLED"]
    assert "interrupted by the user" in parents["tags.bpb.failure_reason"].iat[0]
    assert (children["status"] == "FINISHED").sum() >= 2
    assert set(children["status"]) <= {"FINISHED", "KILLED"}                # nothing left RUNNING
    killed = children[children["status"] == "KILLED"]
    assert killed["tags.bpb.failure_reason"].str.contains("interrupted").all()




@pytest.mark.parametrize("uri, needle", [
    ("http://127.0.0.1:9", "cannot use the MLflow tracking store at http://127.0.0.1:9"),
    ("sqlite:////nonexistent-folder/x/mlflow.db", "does not exist"),
    ("bogus-scheme://x", "cannot use the MLflow tracking store"),
])
@pytest.mark.integration
def test_bad_tracking_uri_fails_before_any_training(uri, needle):
    proc = run_cli("bench", "--dry-run", "--tracking-uri", uri)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and "--tracking-uri" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""      # no estimate, no cell, no session


@pytest.mark.integration
def test_report_without_a_session_says_so(tmp_path):
    (tmp_path / "empty.db").touch()
    proc = run_cli("report", "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}")
    assert proc.returncode == 2 and "no benchmark session" in proc.stderr


@pytest.mark.integration
def test_dry_run_report_has_the_peers_section(dry_run):
    """The peers train hw1-q3 in every bench session where they are installed, and the
    report shows them beside the families (reports/peers.py)."""
    uri, proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (report / "latest" / "report.md").read_text()
    installed = [n for n in impls.PEERS if impls.available_reason(n) is None]
    if not installed:
        assert "## Peers" not in md
        return
    assert "## Peers: scikit-learn and JAX beside the families (hw1-q3)" in md
    for name in installed:
        assert f"| {name} | peer | float32 | 256 |" in md
        assert f"{name} runs at " in md


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
    columns = json.loads(view["state"])["selectedColumns"]
    assert "metrics.`speedup_vs_reference`" in columns and "metrics.`shape_fraction`" in columns
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags["bpb.kind"] == "session")
    cells = [r for r in runs if r.data.tags["bpb.kind"] == "cell" and r.data.tags["bpb.cell_kind"] != "scaling"]
    # no column of the view is empty: each metric it shows is logged by some cell of the session
    logged = set().union(*(r.data.metrics for r in cells))
    assert {c[len("metrics.`"):-1] for c in columns if c.startswith("metrics.")} <= logged, sorted(logged)
    for run in (r for r in runs if r.data.tags.get("bpb.cell_kind") == "scaling"):      # tests/test_scaling.py
        kind = run.data.tags["bpb.scaling"]
        assert run.info.run_name.startswith(f"{run.data.tags['implementation']} "), run.info.run_name
        assert run.info.run_name.endswith("· f32 · scaling hw1-q3") and (kind in run.info.run_name or kind == "1-rank")
        assert {k for k in run.data.metrics if "/" in k and not k.startswith("rank")} == {"round/samples_per_second"}
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

