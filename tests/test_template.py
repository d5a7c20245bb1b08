"""A new SQLite store's template (tracking/template.py): the first new store is built by MLflow's
migrations and kept; every later one is a copy, the same database to the byte of its dump; a
damaged template is passed over and replaced; a cache that cannot be written costs nothing."""
import sqlite3

import pytest

from tracking import schema, template


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return template.path(schema.head())


def dump(path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def shape(path) -> dict:
    """Every table's columns (name, type, not null, default, key), indexes and rows. Two builds
    by MLflow's migrations can write a table's columns in another order (an alembic batch step
    copies a table), so builds are compared by this; a copy is compared by its dump."""
    con = sqlite3.connect(path)
    try:
        tables = [n for (n,) in con.execute("select name from sqlite_master where type = 'table'")]
        return {t: (sorted(tuple(c[1:]) for c in con.execute(f'pragma table_info("{t}")')),
                    sorted(i[1] for i in con.execute(f'pragma index_list("{t}")')),
                    sorted(con.execute(f'select * from "{t}"').fetchall(), key=repr)) for t in tables}
    finally:
        con.close()


def test_the_first_new_store_is_kept_and_the_next_is_a_copy_of_it(tmp_path, cache):
    assert not cache.exists()
    built = schema.build(tmp_path / "first.db")
    assert cache.is_file() and dump(cache) == dump(built)
    kept = cache.stat().st_mtime_ns
    copied = schema.build(tmp_path / "second.db")
    assert dump(copied) == dump(built) and cache.stat().st_mtime_ns == kept      # read, not written
    assert schema.complete_and_empty(copied)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]               # no part left


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(the shape of a store built by MLflow's migrations, the template that build kept), made
    once for the module: each damaged template below starts from a copy of it."""
    folder = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder / "cache"))
        store = schema.build(folder / "reference.db")
        return shape(store), template.path(schema.head()).read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "a store with a run", "another database"])
def test_a_damaged_template_is_passed_over_and_replaced(tmp_path, cache, built, damage):
    reference, good = built
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(good)
    if damage == "garbage":
        cache.write_bytes(b"not a database at all" * 100)
    elif damage == "truncated":
        cache.write_bytes(good[:len(good) // 3])
    elif damage == "a store with a run":
        con = sqlite3.connect(cache)
        con.execute("insert into experiments (experiment_id, name, lifecycle_stage) values (7, 'x', 'active')")
        con.commit()
        con.close()
    else:
        cache.unlink()
        con = sqlite3.connect(cache)
        con.execute("create table notes (text)")
        con.commit()
        con.close()
    store = schema.build(tmp_path / "new.db")
    assert shape(store) == reference and schema.complete_and_empty(store)
    assert dump(cache) == dump(store)                  # replaced by the store just built


def test_a_cache_that_cannot_be_written_only_means_building(tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))      # its stores folder cannot be made
    first, second = schema.build(tmp_path / "a.db"), schema.build(tmp_path / "b.db")
    assert shape(first) == shape(second) and schema.complete_and_empty(second)
    assert not (blocked / "backprop-bench").exists()
