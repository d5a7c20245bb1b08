"""A new SQLite store's template: the first new store built at this MLflow's schema
(tracking/schema.py) is kept, empty, in the user's cache, and every later new store is a copy
of it. A copy takes 5 ms; MLflow's migrations take 1.1 s on the 2-core machine of
docs/performance.md, paid by every first use of a store. The template's name holds the MLflow
and SQLAlchemy versions and the schema revision, so an upgrade builds a new one. A template
that cannot be read, or whose copy is not a complete empty store, is passed over: the store is
built instead. This module knows SQLite files only; tracking/schema.py says what complete is."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from tracking.cache import put, user_cache


def path(revision: str) -> Path:
    """The template of schema ``revision``, in the user's cache (tracking/cache.py)."""
    import mlflow
    import sqlalchemy
    return user_cache() / "stores" / f"new-mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}-{revision}.db"


def copy_to(target: Path, revision: str, complete: Callable[[Path], bool]) -> bool:
    """``target`` made a copy of the template: True when there is one and ``complete(target)``;
    else False, and nothing is left at ``target``."""
    try:
        source = path(revision)
        if source.is_file():
            backup(source, target)
            if complete(target):
                return True
    except (OSError, sqlite3.Error):       # unreadable or damaged: build instead
        pass
    for p in (target, Path(f"{target}-journal")):
        p.unlink(missing_ok=True)
    return False


def keep(built: Path, revision: str) -> None:
    """A copy of the new store ``built`` kept as the template (called when ``copy_to`` found none,
    or a bad one, which this replaces), written beside it and renamed into place; a cache that
    cannot be written (read-only, full) only means that the next new store is built too."""
    put(path(revision), lambda part: backup(built, part), (OSError, sqlite3.Error))


def backup(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite database ``source`` at ``target`` (SQLite's backup API)."""
    src, dst = sqlite3.connect(source, timeout=60), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
