"""Faults a user can cause, tried as a user would: through the CLI, in subprocesses, on small
data. Nothing recorded is lost, every status tells the truth, no traceback reaches the user
and no password is printed (docs/reliability.md lists each fault and what it does now)."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import SESSION_ENV, is_outcome, fill, run_cli, start_cli

pytestmark = pytest.mark.integration      # every test here starts real processes

mlflow = pytest.importorskip("mlflow")
SMALL = ("bench", "--dry-run", "--impl", "numpy-sample,numpy-batch")


def runs(uri):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("backprop-bench")
    found = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get("bpb.kind") == "session"]
    children = [r for r in found if r.data.tags.get("bpb.kind") == "cell"]
    return parents, children


def start(uri, tmp_path, *extra):
    return start_cli(*SMALL, "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"), *extra, env=SESSION_ENV,
                     stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_first_cell(proc, timeout=300):
    deadline, lines = time.time() + timeout, []
    for line in proc.stdout:
        lines.append(line)
        if is_outcome(line) or time.time() > deadline:
            return lines
    return lines


def group_gone(pgid, timeout=15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_three_sessions_started_together_on_a_fresh_store_all_finish(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [start(uri, tmp_path, "--impl", "numpy-sample") for _ in range(3)]    # one output folder
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    parents, children = runs(uri)
    assert sorted(r.info.status for r in parents) == ["FINISHED"] * 3
    client = mlflow.MlflowClient(uri)
    for run in parents:                    # each session's report is its own, on disk and attached
        run_id = run.info.run_id
        assert run_id in (tmp_path / "out" / run_id / "report.md").read_text()
        attached = client.download_artifacts(run_id, "report/report.md", str(tmp_path / run_id))
        assert run_id in Path(attached).read_text()
    assert children and all(r.info.status == "FINISHED" for r in children)
    tables = {t for (t,) in sqlite3.connect(tmp_path / "fresh.db").execute(
        "select name from sqlite_master where type = 'table'")}
    assert not any(t.startswith("_alembic_tmp") for t in tables)


def test_kill_9_leaves_a_stale_session_that_the_next_report_marks_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = start(uri, tmp_path)
    wait_for_first_cell(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert group_gone(proc.pid), "the worker trained on after its parent was killed"
    parents, _ = runs(uri)
    assert [r.info.status for r in parents] == ["RUNNING"]                  # what kill -9 leaves
    # the next report ends it KILLED; a killed session is not `latest`, --any-status shows it
    report = run_cli("report", "--tracking-uri", uri, "--output-dir", str(tmp_path / "r"))
    assert report.returncode == 2 and "is KILLED: --any-status counts it" in report.stderr, report.stderr
    parents, children = runs(uri)
    assert [r.info.status for r in parents] == ["KILLED"]
    assert "stale" in parents[0].data.tags["bpb.failure_reason"]
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert any(r.info.status == "FINISHED" for r in children)              # finished cells kept
    report = run_cli("report", "--any-status", "--tracking-uri", uri, "--output-dir", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    assert "KILLED" in report.stdout and "stale" in report.stdout and "Traceback" not in report.stderr
    md = (tmp_path / "r" / parents[0].info.run_id / "report.md").read_text()
    assert md.startswith("# backprop-bench report: KILLED session") and "INCOMPLETE" in md
    assert not (tmp_path / "r" / "latest").exists()


def test_only_runs_whose_writer_this_machine_can_see_gone_are_reaped(tmp_path):
    """Five RUNNING runs, each written by a process that is gone, told apart by their identity
    tags (tracking/procs.py): this machine's (a session and a history run) are ended KILLED by
    the next command; one from a machine with this host name but another boot or machine id,
    one from another pid namespace, and one whose pid is alive are left alone. Before, host name
    and pid namespace were the whole identity: a live session on a cloned VM was killed."""
    import tracking
    from tracking import procs
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = {**procs.identity(), "bpb.pid": str(gone.pid), "bpb.pid_start": "1"}
    cases = {"session here": {}, "history here": {"bpb.kind": "history"},
             "other boot": {"bpb.boot_id": "another-boot"}, "other machine id": {"bpb.machine_id": "another"},
             "other pid namespace": {"bpb.pid_ns": "pid:[1]"},
             "alive": {"bpb.pid": str(os.getpid()), "bpb.pid_start": procs.identity()["bpb.pid_start"]}}
    ids, store = {}, tracking.connect(uri)
    for name, tags in cases.items():
        session = tracking.Session.start(store, name=name, params={}, tags={})
        session.client.set_tag(session.run_id, "bpb.kind", "session")
        for key, value in {**here, **tags}.items():
            session.client.set_tag(session.run_id, key, value)
        ids[name] = session.run_id
    proc = run_cli("report", "--tracking-uri", uri, "--output-dir", str(tmp_path / "r"))
    assert "Traceback" not in proc.stderr, proc.stderr
    status = {name: mlflow.MlflowClient(uri).get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"session here": "KILLED", "history here": "KILLED", "other boot": "RUNNING",
                      "other machine id": "RUNNING", "other pid namespace": "RUNNING", "alive": "RUNNING"}


def test_a_report_of_a_session_still_running_says_so_at_the_top(tmp_path):
    """Another process reads a session part-way (its worker held before its first cell): the
    report says RUNNING at the top, and is not linked as latest. Before, it looked like a
    finished session's report."""
    from tests import faults
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    release = tmp_path / "release"
    env = {**SESSION_ENV, "BPB_FAULT": "tests.faults:silent_until_released", faults.RELEASE_ENV: str(release)}
    proc = start_cli(*SMALL, "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"), env=env,
                     stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for line in proc.stdout:                       # the session is open, its worker held
            if line.startswith("session "):
                break
        running, = runs(uri)[0]
        report = run_cli("report", "--run-id", running.info.run_id, "--tracking-uri", uri,
                         "--output-dir", str(tmp_path / "r"))
        assert report.returncode == 0, report.stderr
        assert "is RUNNING: the report shows the cells it has finished so far" in report.stdout
        md = (tmp_path / "r" / running.info.run_id / "report.md").read_text()
        assert md.startswith("# backprop-bench report: RUNNING session\n\n**RUNNING: this session is still running.")
        assert not (tmp_path / "r" / "latest").exists()
    finally:
        release.touch()
        out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    own = (tmp_path / "out" / running.info.run_id / "report.md").read_text()
    assert own.startswith("# backprop-bench report\n")           # the session's own report: no banner


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = start(uri, tmp_path)
    wait_for_first_cell(proc)
    os.kill(proc.pid, signal.SIGTERM)                                       # the parent only
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "terminated (SIGTERM)" in out and "Traceback" not in out
    assert group_gone(proc.pid)
    parents, children = runs(uri)
    assert [r.info.status for r in parents] == ["KILLED"]
    assert "terminated (SIGTERM)" in parents[0].data.tags["bpb.failure_reason"]
    assert not [r for r in children if r.info.status == "RUNNING"]


def test_a_full_disk_fails_the_session_with_one_readable_reason(tmp_path, full_disk):
    (full_disk / "out").mkdir()
    fill(full_disk)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = run_cli("bench", "--dry-run", "--impl", "numpy-sample", "--tracking-uri", uri,
                   "--output-dir", str(full_disk / "out"), env={"CI": "1"})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    parents, children = runs(uri)
    assert [r.info.status for r in parents] == ["FAILED"]
    reason = parents[0].data.tags["bpb.failure_reason"]
    assert "No space left on device" in reason and "\n" not in reason
    assert children and all(r.info.status == "FINISHED" for r in children)   # measured cells kept


def test_passwords_in_a_tracking_uri_are_never_printed():
    proc = run_cli("bench", "--dry-run", "--tracking-uri", "http://alice:s3cret@127.0.0.1:9")
    assert proc.returncode == 2
    assert "s3cret" not in proc.stdout + proc.stderr and "alice:***@127.0.0.1:9" in proc.stderr


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.mkdir(), "is a folder, not a database file"),
    (lambda p: None, "no tracking store at"),
])
def test_report_on_a_wrong_sqlite_path_creates_nothing(tmp_path, make, needle):
    path = tmp_path / "typo.db"
    make(path)
    proc = run_cli("report", "--tracking-uri", f"sqlite:///{path}")
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not path.is_file()


@pytest.mark.parametrize("args, option", [
    (["run", "--seed=-1"], "--seed"),
    (["bench", "--batch-sizes", "0,-5"], "--batch-sizes"),
    (["bench", "--seeds=-1"], "--seeds"),
    (["run", "--output-json", "/nonexistent-folder/x.json"], "--output-json"),
    (["run", "--optimizer", "adam", "--momentum", "0.9"], "--momentum"),
    (["run", "--tracking-uri", "sqlite:///x.db"], "--tracking-uri"),
])
def test_bad_options_are_refused_before_any_work(args, option):
    proc = run_cli(*args)
    assert proc.returncode == 2 and option in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_report_output_dir_naming_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run_cli("report", "--output-dir", str(tmp_path / "file"))
    assert proc.returncode == 2 and "--output-dir" in proc.stderr


def test_a_gate_with_no_runnable_implementation_is_an_error_not_a_pass(tmp_path):
    proc = run_cli("regress", "--impl", "torch-cuda", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert proc.returncode == 2 and "nothing to run here" in proc.stderr and "checks pass" not in proc.stdout


@pytest.mark.parametrize("command, where", [
    (SMALL, "under-a-file"),
    (SMALL, "/proc"),
    (("compare", "latest~1", "latest"), "under-a-file"),
    (("history",), "under-a-file"),
    (("report",), "under-a-file"),
])
def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, command, where):
    """Refused with a clear message before the first cell: no session in the store, no estimate
    printed. As root, a folder's mode does not stop a write: a path under a regular file, or
    under /proc, does."""
    import tracking
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracking.connect(uri)
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "out" if where == "under-a-file" else Path("/proc/bpb-out")
    proc = run_cli(*command, "--tracking-uri", uri, "--output-dir", str(out), env={"CI": "1"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr
    assert f"--output-dir {out}: cannot write there" in proc.stderr and "nothing has run" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "estimate" not in proc.stdout
    assert runs(uri) == ([], [])


def test_the_gate_refuses_an_unwritable_report_or_baseline_folder_before_any_work(tmp_path):
    import tracking
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracking.connect(uri)
    (tmp_path / "reports").write_text("not a folder")            # the gate writes into reports/out/regress
    proc = run_cli("regress", "--tracking-uri", uri, cwd=tmp_path, env={"CI": "1"})
    assert proc.returncode == 2 and "the gate's report folder" in proc.stderr and "cannot write there" in proc.stderr
    (tmp_path / "reports").unlink()
    proc = run_cli("regress", "--update", "--baseline", "/proc/bpb/baseline.json", "--tracking-uri", uri,
                   cwd=tmp_path, env={"CI": "1"})
    assert proc.returncode == 2 and "--baseline's folder /proc/bpb: cannot write there" in proc.stderr
    assert "Traceback" not in proc.stderr and runs(uri) == ([], [])
