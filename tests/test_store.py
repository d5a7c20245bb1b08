"""A tracking store's schema (tracking/store.py, tracking/schema.py, tracking/repair.py), tried
as a user meets it, through the CLI in subprocesses: a first use or a migration interrupted at
any moment (SIGINT, SIGTERM, kill -9) never leaves a half-built store, on SQLite or PostgreSQL;
one left half-built by plain MLflow is named in one line and repaired with every run
(docs/reliability.md)."""
from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import SESSION_ENV, one_line, run_cli, start_cli

pytestmark = pytest.mark.integration      # every test here starts real processes

mlflow = pytest.importorskip("mlflow")


# ---- stores in every state, made with MLflow's own migrations -----------------------------
def revisions() -> list:
    """MLflow's schema revisions, newest first."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    return list(ScriptDirectory.from_config(_get_alembic_config("")).walk_revisions())


def store_at(path: Path, revision: str | None) -> None:
    """A store as MLflow would have made it at ``revision`` (None: the initial tables only)."""
    import sqlalchemy
    from mlflow.store.db.utils import InitialBase
    from tracking import schema
    eng = sqlalchemy.create_engine(f"sqlite:///{path}")
    InitialBase.metadata.create_all(eng)
    if revision:
        schema.upgrade(eng, revision)
    eng.dispose()


def insert(con, table: str, values: dict) -> None:
    """A row with ``values``; any other required column gets a zero or an empty string."""
    row = dict(values)
    for _, name, kind, notnull, default, _ in con.execute(f'pragma table_info("{table}")'):
        if name not in row and notnull and default is None:
            row[name] = 0 if any(t in kind.upper() for t in ("INT", "FLOAT", "REAL", "NUM", "BOOL")) else ""
    con.execute(f'insert into "{table}" ({", ".join(row)}) values ({", ".join("?" * len(row))})', list(row.values()))


def add_runs(path: Path, n: int = 3) -> list[str]:
    """``n`` finished runs, each with a param, a tag and a metric, in experiment 1; returns their ids."""
    con = sqlite3.connect(path)
    now = int(time.time() * 1000)
    insert(con, "experiments", {"experiment_id": 1, "name": "backprop-bench", "artifact_location": str(path.parent),
                                "lifecycle_stage": "active", "creation_time": now, "last_update_time": now})
    ids = []
    for i in range(n):
        run = uuid.uuid4().hex
        insert(con, "runs", {"run_uuid": run, "name": f"run {i}", "source_type": "LOCAL", "status": "FINISHED",
                             "start_time": now, "end_time": now, "lifecycle_stage": "active", "experiment_id": 1,
                             "artifact_uri": str(path.parent / run), "user_id": "tester",
                             "source_name": "", "entry_point_name": "", "source_version": ""})
        insert(con, "params", {"key": "seed", "value": str(i), "run_uuid": run})
        insert(con, "tags", {"key": "bpb.kind", "value": "cell", "run_uuid": run})
        metric = {"key": "loss", "value": 0.5 + i, "timestamp": now, "step": 0, "is_nan": 0, "run_uuid": run}
        insert(con, "metrics", metric)
        if con.execute("select 1 from sqlite_master where name = 'latest_metrics'").fetchone():
            insert(con, "latest_metrics", metric)       # what MLflow reads a run's metrics from
        ids.append(run)
    con.commit()
    con.close()
    return ids


def assert_runs_kept(uri: str, ids: list[str]) -> None:
    """Every run reads back through MLflow, with its param, tag and metric."""
    client = mlflow.MlflowClient(uri)
    found = {r.info.run_id: r for r in client.search_runs(["1"], max_results=1000)}
    assert sorted(found) == sorted(ids)
    for i, run in enumerate(found[r] for r in ids):
        assert run.data.params == {"seed": str(i)} and run.data.tags["bpb.kind"] == "cell"
        assert run.data.metrics == {"loss": 0.5 + i}


def state(path: Path) -> tuple[str | None, int]:
    """(schema revision, runs) of a store file, read with SQLite alone."""
    con = sqlite3.connect(path)
    try:
        tables = {n for (n,) in con.execute("select name from sqlite_master where type = 'table'")}
        assert not any(t.startswith("_alembic_tmp_") for t in tables), tables
        (revision,) = con.execute("select version_num from alembic_version").fetchone()
        return revision, con.execute("select count(*) from runs").fetchone()[0]
    finally:
        con.close()


def building(path: Path):
    """True once a build of the sqlite file ``path`` has started: a temporary file beside it
    appears, or (written in place) the file itself appears or changes."""
    def seen():
        try:
            st = path.stat()
            return st.st_mtime_ns, st.st_size
        except FileNotFoundError:
            return None
    before = seen()
    return lambda: seen() != before or any(p.name.startswith(f".{path.name}.") for p in path.parent.iterdir())


def interrupt(args: list[str], started, sig: int, after: float, env=None) -> subprocess.CompletedProcess:
    """``python -m benchmarks ARGS``, sent ``sig`` ``after`` seconds once ``started()`` is
    true, or once it has ended."""
    proc = start_cli(*args, env={**SESSION_ENV, **(env or {})}, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not started():
        time.sleep(0.05)
    time.sleep(after)
    if proc.poll() is None:
        proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
    return subprocess.CompletedProcess(args, proc.returncode, out, "")


SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL] * 2


def assert_interrupted(proc, sig: int) -> None:
    """Stopped by ``sig`` (exit 130 for the two it handles), or finished before it came; no
    traceback. Python reports, and then ignores, an exception that a signal handler raises
    while a garbage-collection callback runs ("Exception ignored in"): that signal is lost
    and the command finishes (benchmarks/cli.py's handling, not the store's)."""
    lost = "Exception ignored in" in proc.stdout
    assert proc.returncode in (0, 130, -sig), proc.stdout
    assert "Traceback" not in proc.stdout or (lost and proc.stdout.count("Traceback") == 1), proc.stdout


def test_a_first_use_interrupted_at_any_moment_leaves_no_store_or_a_complete_one(tmp_path):
    """Each try with a cache of its own: no template (tracking/template.py), so that MLflow's
    migrations run and are interrupted, and so is the template's keeping."""
    path = tmp_path / "new.db"
    uri = f"sqlite:///{path}"
    rng = random.Random(21)
    for i, sig in enumerate(SIGNALS):
        proc = interrupt(["store", "check", "--tracking-uri", uri], building(path), sig, rng.uniform(0, 1.5),
                         env={"XDG_CACHE_HOME": str(tmp_path / f"cache-{i}")})
        assert_interrupted(proc, sig)
        if path.exists():             # the build finished before the signal: complete
            from tracking import schema
            assert state(path) == (schema.head(), 0)
            path.unlink()
    proc = run_cli("store", "check", "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(current), 0 run(s)" in proc.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []    # leftovers removed


def test_a_migration_interrupted_at_any_moment_leaves_the_old_store_or_the_migrated_one(tmp_path):
    old = revisions()[30].revision
    path = tmp_path / "old.db"
    uri = f"sqlite:///{path}"
    store_at(path, old)
    ids = add_runs(path)
    from tracking import schema
    rng = random.Random(9)
    for sig in SIGNALS:
        before = path.read_bytes()
        proc = interrupt(["store", "check", "--tracking-uri", uri], building(path), sig, rng.uniform(0, 1.5))
        assert_interrupted(proc, sig)
        assert state(path) in ((old, 3), (schema.head(), 3)), proc.stdout
        if state(path)[0] == old:
            assert path.read_bytes() == before                      # never written
        else:                                   # finished before the signal: try again from the old one
            path.unlink()
            store_at(path, old)
            ids = add_runs(path)
    proc = run_cli("store", "check", "--tracking-uri", uri)
    assert proc.returncode == 0 and "(current), 3 run(s)" in proc.stdout, proc.stdout + proc.stderr
    assert f"migrated the tracking store {path} from MLflow schema revision {old}" in proc.stderr
    assert_runs_kept(uri, ids)


def half_built(path: Path, how: str, runs: bool = True) -> list[str]:
    """A store as an interrupted set-up or migration of plain MLflow leaves it; returns its runs."""
    chain = revisions()
    if how == "no revision":            # killed while the initial tables were made
        store_at(path, None)
        return add_runs(path) if runs else []
    if how == "next step applied":      # a step's table made, the revision not yet recorded
        step = next(r for r in chain[1:] if r.doc.lower().startswith("add") and "table" in r.doc.lower())
        store_at(path, step.revision)
        ids = add_runs(path) if runs else []
        con = sqlite3.connect(path)
        con.execute("update alembic_version set version_num = ?", (step.down_revision,))
        con.commit()
        return ids
    store_at(path, chain[5].revision)
    ids = add_runs(path) if runs else []
    con = sqlite3.connect(path)             # a table being rebuilt: copied, the old one dropped
    con.execute("create table _alembic_tmp_tags as select * from tags")
    if how == "table rebuilt, not renamed":
        con.execute("drop table tags")
    con.commit()
    return ids


@pytest.mark.parametrize("how", ["next step applied", "table being rebuilt", "table rebuilt, not renamed"])
def test_a_half_built_store_is_named_in_one_line_and_repaired_with_every_run(tmp_path, how):
    path = tmp_path / "half.db"
    uri = f"sqlite:///{path}"
    ids = half_built(path, how)
    before = path.read_bytes()
    proc = run_cli("report", "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"))
    one_line(proc, f"the tracking store {path} is half-built")
    assert f"holds {len(ids)} run(s)" in proc.stderr
    assert f"python -m benchmarks store repair --tracking-uri {uri}" in proc.stderr
    assert "server is running" not in proc.stderr              # a file has no server to check
    assert path.read_bytes() == before                         # refused, untouched
    fixed = run_cli("store", "repair", "--tracking-uri", uri)
    assert fixed.returncode == 0 and f"with all {len(ids)} run(s)" in fixed.stdout, fixed.stdout + fixed.stderr
    assert Path(f"{path}.before-repair").read_bytes() == before     # the old file kept
    check = run_cli("store", "check", "--tracking-uri", uri)
    assert check.returncode == 0 and f"(current), {len(ids)} run(s)" in check.stdout, check.stdout + check.stderr
    assert_runs_kept(uri, ids)


@pytest.mark.parametrize("how", ["no revision", "table being rebuilt"])
def test_an_empty_half_built_store_is_rebuilt_at_its_next_use(tmp_path, how):
    """What an interrupted first use of plain MLflow leaves holds nothing to lose: rebuilt, said so."""
    path = tmp_path / "half.db"
    uri = f"sqlite:///{path}"
    half_built(path, how, runs=False)
    proc = run_cli("store", "check", "--tracking-uri", uri)
    assert proc.returncode == 0 and "(current), 0 run(s)" in proc.stdout, proc.stdout + proc.stderr
    assert f"rebuilt the tracking store {path}: an interrupted set-up had left it half-built" in proc.stderr


def test_repair_refuses_to_drop_rows_it_has_no_table_for(tmp_path):
    path = tmp_path / "half.db"
    half_built(path, "next step applied")
    con = sqlite3.connect(path)
    con.execute("create table notes (id integer primary key, text)")      # a table MLflow never made
    con.execute("insert into notes (text) values ('keep me')")
    con.commit()
    con.close()
    before = path.read_bytes()
    proc = run_cli("store", "repair", "--tracking-uri", f"sqlite:///{path}")
    assert proc.returncode == 2 and "notes" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert path.read_bytes() == before and not Path(f"{path}.before-repair").exists()


def pg_revision(cluster, database: str) -> str | None:
    """The schema revision MLflow recorded in ``database`` (None: none yet)."""
    import psycopg
    with psycopg.connect(f"host={cluster.socket} port={cluster.port} user=bpb dbname={database}") as con:
        if con.execute("select to_regclass('alembic_version')").fetchone()[0] is None:
            return None
        row = con.execute("select version_num from alembic_version").fetchone()
        return row[0] if row else None


def pg_tables(cluster, database: str):
    def started():
        import psycopg
        with psycopg.connect(f"host={cluster.socket} port={cluster.port} user=bpb dbname={database}") as con:
            return con.execute("select to_regclass('experiments')").fetchone()[0] is not None
    return started


def test_a_first_use_interrupted_on_postgresql_leaves_nothing_to_repair(pg_cluster):
    """PostgreSQL's DDL is transactional: a migration interrupted at any moment is rolled back
    whole, and the next use completes the set-up."""
    from tracking import schema
    cluster = pg_cluster
    rng = random.Random(5)
    for i, sig in enumerate(SIGNALS[:3]):
        database = f"first_use_{i}"
        cluster.start(database)
        uri = cluster.uri(database)
        proc = interrupt(["store", "check", "--tracking-uri", uri], pg_tables(cluster, database), sig,
                         rng.uniform(0, 1))
        assert_interrupted(proc, sig)
        assert pg_revision(cluster, database) in (None, schema.head())
        again = run_cli("store", "check", "--tracking-uri", uri)
        assert again.returncode == 0 and "takes a write" in again.stdout, again.stdout + again.stderr
        assert pg_revision(cluster, database) == schema.head()
