"""A tracking store that fails (tracking/failure.py), through the CLI in subprocesses: a full
disk at a session's start or in its middle, the store file deleted under a running session, a
damaged file or damaged pages, a server that does not answer, a server whose PostgreSQL stays
down past the client's retries. Each is one line naming the cause, exit 2, never a traceback;
a session that the store can still end is ended FAILED with that line (docs/reliability.md)."""
from __future__ import annotations

import os
import random
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.helpers import SESSION_ENV, fill, is_outcome, one_line, run_cli, start_cli, tmpfs

pytestmark = pytest.mark.integration      # every test here starts real processes

mlflow = pytest.importorskip("mlflow")
SESSION = ("bench", "--dry-run", "--impl", "numpy-sample,numpy-batch", "--threads", "1")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: room for a store, then filled by the test; skipped where none can be mounted."""
    yield from tmpfs(tmp_path / "disk", "4m")


def session_runs(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("backprop-bench")
    return [] if exp is None else client.search_runs([exp.experiment_id], "tags.`bpb.kind` = 'session'")


def start_session(uri: str, out: Path, env=None) -> tuple[subprocess.Popen, list[str]]:
    """A session in a subprocess, returned once its first cell has finished (with its lines)."""
    proc = start_cli(*SESSION, "--tracking-uri", uri, "--output-dir", str(out), env={**SESSION_ENV, **(env or {})})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if is_outcome(line):
            return proc, lines
    raise AssertionError("the session ended before its first cell:\n" + "".join(lines) + proc.stderr.read())


def finish(proc: subprocess.Popen, lines: list[str]) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + out, err)


@pytest.mark.parametrize("room", [0, 12 * 1024])
def test_a_full_disk_at_the_start_is_one_line_before_any_work(tmp_path, small_disk, room):
    """Full to the last byte, or with room for a page rewritten in place (a tag set again to its
    value passes there) but not for a new row (the session's first write)."""
    uri = f"sqlite:///{small_disk / 'm.db'}"
    made = run_cli("store", "check", "--tracking-uri", uri)      # the store exists and was checked once
    assert made.returncode == 0, made.stderr
    fill(small_disk)
    filler = small_disk / "filler"
    os.truncate(filler, filler.stat().st_size - room)
    proc = run_cli(*SESSION, "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"))
    one_line(proc, f"the disk holding the tracking store {small_disk / 'm.db'} is full")
    assert "estimate" not in proc.stdout                        # refused before any work
    (small_disk / "filler").unlink()
    assert session_runs(uri) == []


def test_a_full_disk_mid_session_is_one_line(tmp_path, small_disk):
    uri = f"sqlite:///{small_disk / 'm.db'}"
    proc, lines = start_session(uri, tmp_path / "out")
    fill(small_disk)
    done = finish(proc, lines)
    one_line(done, f"the disk holding the tracking store {small_disk / 'm.db'} is full")


def test_a_store_deleted_under_a_running_session_is_named(tmp_path):
    path = tmp_path / "m.db"
    proc, lines = start_session(f"sqlite:///{path}", tmp_path / "out")
    path.unlink()
    done = finish(proc, lines)
    one_line(done, f"the tracking store {path} was deleted")


@pytest.mark.parametrize("where, needle", [(0, "file is not a database"), (0.5, "malformed")])
def test_a_damaged_store_is_one_line_naming_it(tmp_path, where, needle):
    path = tmp_path / "m.db"
    uri = f"sqlite:///{path}"
    assert run_cli("store", "check", "--tracking-uri", uri).returncode == 0
    size = path.stat().st_size
    with open(path, "r+b") as f:                               # garbage over a stretch of pages
        f.seek(int(size * where))
        f.write(random.Random(1).randbytes(size // 4))
    proc = run_cli("report", "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"))
    one_line(proc, f"the tracking store {path} is damaged")
    assert needle in proc.stderr


def test_a_store_damaged_mid_session_ends_it_failed_with_the_cause(tmp_path):
    """Garbage over the pages of the metrics table only: the session's next metric write fails,
    and the store still takes the writes that end the session FAILED with that cause."""
    path = tmp_path / "m.db"
    uri = f"sqlite:///{path}"
    proc, lines = start_session(uri, tmp_path / "out")
    con = sqlite3.connect(path)
    try:
        pages = [p for (p,) in con.execute("select pageno from dbstat where name in "
                                           "(select name from sqlite_master where tbl_name = 'metrics')")]
    except sqlite3.OperationalError as exc:      # SQLite built without its dbstat table
        proc.kill()
        pytest.skip(f"needs SQLite's dbstat table: {exc}")
    size = con.execute("pragma page_size").fetchone()[0]
    con.close()
    rng = random.Random(3)
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * size)
            f.write(rng.randbytes(size))
        f.seek(24)                  # the file change counter: tells the session's connections to reread
        counter = int.from_bytes(f.read(4), "big")
        f.seek(24)
        f.write((counter + 1).to_bytes(4, "big"))
    done = finish(proc, lines)
    one_line(done, f"the tracking store {path} is damaged (SQLite: database disk image is malformed)")
    (run,) = session_runs(uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["bpb.failure_reason"].startswith(f"the tracking store {path} is damaged")


def test_a_server_that_does_not_answer_is_one_line(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # nothing listens there once it is closed
    proc = run_cli("report", "--tracking-uri", f"http://127.0.0.1:{port}", "--output-dir", str(tmp_path))
    one_line(proc, f"the tracking server at http://127.0.0.1:{port} did not answer in one try (connection refused)")


def test_a_server_whose_database_stays_down_past_the_retries_is_one_line(pg_cluster, tmp_path):
    """The team server on PostgreSQL, PostgreSQL stopped mid-session: MLflow's client retries
    (2 here, instead of 7 over about four minutes), then the session stops with one line."""
    from tests.test_server import Server
    cluster = pg_cluster
    cluster.start("down_test")
    srv = Server(cluster.folder, tmp_path, "--backend-store-uri", cluster.uri("down_test")).start()
    try:
        proc, lines = start_session(srv.url, tmp_path / "out", env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                                                                    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
        cluster.stop()
        try:
            done = finish(proc, lines)
        finally:
            cluster.start()
        one_line(done, f"the tracking server at {srv.url} answered HTTP 5")
        assert "to each of 3 tries (an error inside the server, such as its database being down)" in done.stderr
    finally:
        srv.stop()


def test_a_session_whose_closing_step_fails_still_ends_with_its_status(tmp_path):
    """``tracking.Session.finish`` tries every step, the run's status last: one that fails (here
    the system-metrics monitor) cannot leave the session RUNNING; its error is raised after."""
    import mlflow
    import tracking

    class Broken:
        def finish(self):
            raise RuntimeError("the monitor broke")

    store = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    session = tracking.Session.start(store, name="closing", params={}, tags={})
    session.monitor = Broken()
    with pytest.raises(RuntimeError, match="the monitor broke"):
        session.finish("KILLED", "stopped by the test")
    run = mlflow.MlflowClient(store.uri).get_run(session.run_id)
    assert run.info.status == "KILLED" and run.data.tags["bpb.failure_reason"] == "stopped by the test"


def test_a_server_error_answer_that_was_not_retried_is_one_line_too():
    """MLflow's RestException carrying the server's own 5xx answer (what a session meets with the
    server's database shutting down under MLflow 3.18, whose client lets it through) is named in
    one line, not a traceback; a 4xx answer is not a store failure."""
    from mlflow.exceptions import RestException
    from tracking import failure
    down = RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "(psycopg.OperationalError) "
                          "connection failed: FATAL:  the database system is shutting down"})
    line = failure.describe(down, "http://127.0.0.1:5000", "http://127.0.0.1:5000")
    assert line == ("the tracking server at http://127.0.0.1:5000 answered HTTP 503 (TEMPORARILY_UNAVAILABLE: an "
                    "error inside the server, such as its database being down); see the server's log, then run again")
    missing = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"})
    assert failure.describe(missing, "http://127.0.0.1:5000", "http://127.0.0.1:5000") is None
