"""A SQLite store's schema, made and migrated so that an interrupt never leaves it half-built.

MLflow creates its tables at a store's first use, and migrates them after an MLflow upgrade,
one alembic step after another, each committed as it goes. On SQLite an interrupt in between
(Ctrl-C, SIGTERM, kill -9, a power cut) leaves a store that every later use refuses ("table
trace_info already exists"). So here:

- a new store is built in a temporary file beside it, moved into place when complete;
- a store that needs a migration is copied (SQLite's backup API), the copy is migrated and
  moved into place when complete: the store itself is never half-migrated, and a migration
  that does not finish leaves it as it was;
- a half-built store (left by plain MLflow, or by a version of this project before this
  module) is detected and named; ``tracking.repair`` rebuilds it with every row it holds.

Everything here runs under the store's file lock (``tracking/store.py``), so a temporary file
found beside the store belongs to a process that died: it is removed. PostgreSQL needs none of
this: its DDL is transactional, so an interrupted set-up leaves nothing behind.
"""
from __future__ import annotations

import functools
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import tracking.template as template
from tracking.failure import TrackingError, describe

# what an interrupted alembic step leaves, when the next try runs it again
HALF_BUILT_SIGNS = ("already exists", "duplicate column", "no such table", "no such column")


@dataclass
class Store:
    """What a SQLite file holds: ``kind`` is new (no MLflow tables yet), current, old (an
    earlier schema revision: it needs a migration) or half-built; ``why`` says what shows it;
    ``empty``: it holds no experiment, run or registered model (nothing to lose)."""
    path: Path
    kind: str
    revision: str | None = None
    runs: int = 0
    why: str = ""
    empty: bool = True


@functools.lru_cache(maxsize=None)
def head() -> str:
    """The schema revision this MLflow writes."""
    from mlflow.store.db.utils import _get_latest_schema_revision
    return _get_latest_schema_revision()


def known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    try:
        return ScriptDirectory.from_config(_get_alembic_config("")).get_revision(revision) is not None
    except Exception:         # alembic's ResolutionError, CommandError
        return False


@functools.lru_cache(maxsize=None)
def mlflow_tables() -> frozenset[str]:
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import InitialBase      # also registers every ORM table
    return frozenset(Base.metadata.tables) | frozenset(InitialBase.metadata.tables)


def inspect(path: Path) -> Store:
    """Read what ``path`` holds, with SQLite alone (no MLflow store is opened)."""
    if not path.exists() or path.stat().st_size == 0:
        return Store(path, "new")
    try:
        con = sqlite3.connect(path, timeout=60)
        try:
            tables = {n for (n,) in con.execute("select name from sqlite_master where type = 'table'")}
            revisions = ([r for (r,) in con.execute("select version_num from alembic_version")]
                         if "alembic_version" in tables else [])
            counts = {t: con.execute(f'select count(*) from "{t}"').fetchone()[0]
                      for t in ("experiments", "runs", "registered_models") if t in tables}
        finally:
            con.close()
    except sqlite3.Error as exc:
        uri = f"sqlite:///{path}"
        raise TrackingError(describe(exc, uri, uri) or f"cannot read {path}: {exc}") from None
    runs, empty = counts.get("runs", 0), not any(counts.values())
    leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if not tables - {"alembic_version", "sqlite_sequence"}:
        return Store(path, "new")
    if not tables & mlflow_tables() and not leftovers:
        raise TrackingError(f"{path} is a SQLite database but not an MLflow tracking store (its tables: "
                            f"{', '.join(sorted(tables)[:5])}); name another file with --tracking-uri")
    revision = revisions[0] if len(revisions) == 1 else None
    if leftovers:
        return Store(path, "half-built", revision, runs, f"an unfinished step left table {leftovers[0]}", empty)
    if revision is None:
        return Store(path, "half-built", None, runs, "its tables exist but no schema revision was recorded", empty)
    if revision == head():
        return Store(path, "current", revision, runs, empty=empty)
    if not known(revision):
        import mlflow
        raise TrackingError(f"the tracking store {path} has MLflow schema revision {revision}, which MLflow "
                            f"{mlflow.__version__} does not know: a newer MLflow wrote it; upgrade MLflow "
                            "(pip install -U mlflow) or pass another --tracking-uri")
    return Store(path, "old", revision, runs, empty=empty)


def prepare(path: Path, shown: str) -> None:
    """Make ``path`` a complete store at this MLflow's schema before MLflow opens it: build a new
    one, migrate an old one (on a copy); rebuild a half-built one that holds nothing (an
    interrupted first use), and refuse one that holds something, naming it and its repair
    (``shown``: the tracking URI as messages show it)."""
    real = path.resolve()              # a symlinked store is written through, not replaced
    remove_leftovers(real)
    store = inspect(real)
    if store.kind == "old":
        try:
            install(build(real, source=real), real)
            print(f"migrated the tracking store {real} from MLflow schema revision {store.revision} to {head()} "
                  "(on a copy, moved into place when complete)", file=sys.stderr)
            return
        except Exception as exc:
            sign = half_built_sign(exc)
            if sign is None:
                raise
            store = Store(real, "half-built", store.revision, store.runs, sign, store.empty)
    if store.kind == "new":
        install(build(real), real)
    elif store.kind == "half-built" and store.empty:
        install(build(real), real)
        print(f"rebuilt the tracking store {real}: an interrupted set-up had left it half-built ({store.why}), "
              "holding no experiment, run or model", file=sys.stderr)
    elif store.kind == "half-built":
        raise TrackingError(half_built(shown, store))


def half_built(shown: str, store: Store) -> str:
    """The one line that names a half-built store and its repair."""
    return (f"the tracking store {store.path} is half-built: an interrupted set-up or migration left it at MLflow "
            f"schema revision {store.revision or '(none)'} with part of the next step applied ({store.why}). It "
            f"holds {store.runs} run(s); `python -m benchmarks store repair --tracking-uri {shown}` "
            "rebuilds it with all of them and keeps the old file beside it")


def half_built_sign(exc: BaseException) -> str | None:
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = first[0] if first else ""
    return text if any(sign in text for sign in HALF_BUILT_SIGNS) else None


# ---- files -------------------------------------------------------------------------------
def temp_name(real: Path) -> Path:
    return real.with_name(f".{real.name}.{os.getpid()}.building")


def remove_leftovers(real: Path) -> list[Path]:
    """Temporary files of builds whose process died (we hold the store's lock: nobody else builds)."""
    prefix = f".{real.name}."
    gone = [p for p in real.parent.iterdir() if p.name.startswith(prefix)
            and (p.name.endswith(".building") or p.name.endswith(".building-journal"))]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def engine(path: Path):
    import sqlalchemy
    from sqlalchemy.pool import NullPool
    return sqlalchemy.create_engine(f"sqlite:///{path}", poolclass=NullPool)


def upgrade(eng, revision: str = "heads") -> None:
    """Run MLflow's migrations on ``eng`` up to ``revision`` (what ``mlflow db upgrade`` does)."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    config = _get_alembic_config(str(eng.url))
    with eng.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def build(real: Path, source: Path | None = None) -> Path:
    """A temporary file beside ``real``: a new store at this MLflow's schema (a copy of the
    template, tracking/template.py, when there is a good one), or a copy of ``source`` migrated to
    it. Removed again when anything (an interrupt included) stops it."""
    from mlflow.store.db.utils import InitialBase
    tmp = temp_name(real)
    tmp.unlink(missing_ok=True)
    try:
        if source is None and template.copy_to(tmp, head(), complete_and_empty):
            return tmp
        if source is not None:
            copy(source, tmp)
        eng = engine(tmp)
        try:
            if source is None:
                InitialBase.metadata.create_all(eng)     # what MLflow does at a first use, then migrates
            upgrade(eng)
        finally:
            eng.dispose()
        found = inspect(tmp)
        if found.kind != "current":
            raise TrackingError(f"building {real} left it {found.kind} at revision {found.revision}")
        if source is None:
            template.keep(tmp, head())
        return tmp
    except BaseException as exc:
        for p in (tmp, Path(f"{tmp}-journal")):
            p.unlink(missing_ok=True)
        stop = interrupt_in(exc)
        if stop is not None and stop is not exc:
            raise stop from None     # Ctrl-C or SIGTERM, not the error SQLAlchemy raised on its way out
        raise


def complete_and_empty(path: Path) -> bool:
    """A store at this MLflow's schema that holds nothing: what a copy of the template must be."""
    try:
        found = inspect(path)
    except TrackingError:
        return False
    return found.kind == "current" and found.empty


def interrupt_in(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM: benchmarks/cli.py) behind ``exc``, if any:
    SQLAlchemy, cleaning up after one, can raise an error of its own instead."""
    seen = []
    while exc is not None and exc not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def copy(source: Path, target: Path) -> None:
    """A consistent copy of the store ``source`` (``template.backup``), with its mode and owner."""
    template.backup(source, target)
    st = source.stat()
    os.chmod(target, st.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(target, st.st_uid, st.st_gid)


def install(tmp: Path, real: Path) -> None:
    """Move the complete ``tmp`` onto ``real`` in one rename, durably."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, real)
    fd = os.open(real.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
