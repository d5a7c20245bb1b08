"""``python -m benchmarks store check|repair``: a SQLite store's state, and the repair of a
half-built one.

A half-built store holds MLflow's tables at some schema revision R, with part of the step after
R applied (a table or column made, an ``_alembic_tmp_*`` copy of a table). Its rows are all
there; only the schema is in between. The repair builds a new store at revision R in a
temporary file beside it, copies every row into it (a table that the unfinished step had
already rebuilt is read from whichever copy holds its rows), checks that every row arrived,
migrates the new store to this MLflow's revision, and moves it into place. The old file is kept
beside it (``<name>.before-repair``), and nothing is replaced when any count differs.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import tracking.schema as schema
from tracking.failure import TrackingError, describe
from tracking.store import connect, display_uri, sqlite_path, store_lock

SKIP = {"alembic_version", "sqlite_sequence"}


def check(uri: str) -> str:
    """Prepare the store as a session would (a new one is made, an old one migrated) and say
    what it holds."""
    path = sqlite_path(uri)
    existed = path is not None and path.exists() and path.stat().st_size > 0
    connect(uri)
    if path is None:
        return f"{display_uri(uri)}: answers and takes a write"
    store = schema.inspect(path.resolve())
    made = "" if existed else "new store made; "
    return (f"{path}: {made}MLflow schema revision {store.revision} (current), {store.runs} run(s), takes a write")


def repair(uri: str) -> str:
    """Rebuild a half-built SQLite store at ``uri`` with all its rows; returns what it did."""
    path = sqlite_path(uri)
    if path is None:
        raise TrackingError(f"{display_uri(uri)} is not a SQLite store: only SQLite stores are repaired here (an "
                            "interrupted set-up on PostgreSQL is rolled back by PostgreSQL itself)")
    if not path.exists():
        raise TrackingError(f"no tracking store at {path}: nothing to repair")
    real = path.resolve()
    try:
        with store_lock(path):
            return _repair(real)
    except TrackingError:
        raise
    except Exception as exc:   # SQLite's and SQLAlchemy's errors, OSError: named in one line
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(describe(exc, uri, display_uri(uri))
                            or f"repair of {real} failed, the store left as it was: {said}") from None


def _repair(real: Path) -> str:
    """Under the store's lock: what ``repair`` does."""
    schema.remove_leftovers(real)
    store = schema.inspect(real)
    if store.kind == "new":
        return f"{real} holds no MLflow tables yet: nothing to repair (its first use makes them)"
    if store.kind == "current":
        return (f"{real} is complete (MLflow schema revision {store.revision}, {store.runs} run(s)): nothing to "
                "repair")
    if store.kind == "old":
        try:
            schema.install(schema.build(real, source=real), real)
            return f"{real} migrated to MLflow schema revision {schema.head()}: {store.runs} run(s)"
        except Exception as exc:
            sign = schema.half_built_sign(exc)
            if sign is None:
                raise
            store = schema.Store(real, "half-built", store.revision, store.runs, sign)
    return rebuild(real, store)


def rebuild(real: Path, store: schema.Store) -> str:
    from mlflow.store.db.utils import InitialBase
    tmp = schema.temp_name(real)
    tmp.unlink(missing_ok=True)
    try:
        eng = schema.engine(tmp)
        try:
            InitialBase.metadata.create_all(eng)
            if store.revision:
                schema.upgrade(eng, store.revision)
        finally:
            eng.dispose()
        copied = copy_rows(real, tmp)
        eng = schema.engine(tmp)
        try:
            schema.upgrade(eng)
        finally:
            eng.dispose()
        after = schema.inspect(tmp)
        if after.kind != "current" or after.runs != store.runs:
            raise TrackingError(f"the rebuilt store has {after.runs} run(s) at revision {after.revision}, the old one "
                                f"{store.runs}: {real} is left as it was")
        kept = keep(real)
        schema.install(tmp, real)
    except BaseException as exc:
        for p in (tmp, Path(f"{tmp}-journal")):
            p.unlink(missing_ok=True)
        stop = schema.interrupt_in(exc)
        if stop is not None and stop is not exc:
            raise stop from None
        raise
    rows = sum(n for n, _ in copied.values())
    return (f"{real} repaired: it was half-built at MLflow schema revision {store.revision or '(none)'} "
            f"({store.why}); rebuilt at {schema.head()} with all {store.runs} run(s) and {rows} row(s) in "
            f"{len(copied)} table(s); the old file is kept as {kept}")


def copy_rows(old: Path, new: Path) -> dict[str, tuple[int, int]]:
    """Every row of ``old`` into the tables of ``new`` (the columns both have); returns, per
    table, (rows in old, rows now in new). Refuses when any table lost a row."""
    con = sqlite3.connect(new, timeout=60)
    try:
        con.execute("attach database ? as old", (str(old),))
        mine = [n for (n,) in con.execute("select name from main.sqlite_master where type = 'table'") if n not in SKIP]
        theirs = {n for (n,) in con.execute("select name from old.sqlite_master where type = 'table'")}
        # rows in a table that is not MLflow's would have no home in the new store: refuse.
        # MLflow's tables that the new store lacks at this revision were made by the unfinished
        # step, and their rows (if any) by that step's own data migration: it runs again
        strangers = [t for t in sorted(theirs - set(mine) - SKIP - schema.mlflow_tables()) if not
                     t.startswith("_alembic_tmp_") and con.execute(f'select 1 from old."{t}" limit 1').fetchone()]
        if strangers:
            raise TrackingError(f"repair: {old} has rows in table(s) {', '.join(strangers)}, which are not MLflow's "
                                "and would not be kept; it is left as it was")
        copied = {}
        for table in mine:
            source = next((s for s in (table, f"_alembic_tmp_{table}") if s in theirs), None)
            if source is None:
                continue
            have = {r[1] for r in con.execute(f'pragma old.table_info("{source}")')}
            cols = ", ".join(f'"{c[1]}"' for c in con.execute(f'pragma main.table_info("{table}")') if c[1] in have)
            con.execute(f'insert or replace into main."{table}" ({cols}) select {cols} from old."{source}"')
            before = con.execute(f'select count(*) from old."{source}"').fetchone()[0]
            after = con.execute(f'select count(*) from main."{table}"').fetchone()[0]
            if after < before:
                raise TrackingError(f"repair: table {table} would keep {after} of its {before} rows; {old} is left "
                                    "as it was")
            copied[table] = (before, after)
        con.commit()
        return copied
    finally:
        con.close()


def keep(real: Path) -> Path:
    """A second name for the old file (a hard link; a copy where links are refused)."""
    kept = real.with_name(f"{real.name}.before-repair")
    if kept.exists():
        kept = real.with_name(f"{real.name}.before-repair-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.link(real, kept)
    except OSError:
        schema.copy(real, kept)
    return kept
