"""The machine inventory recorded with every session (``benchmarks/inventory.py``)."""
from benchmarks import gpu, inventory

LIBS = [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.31", "architecture": "SkylakeX",
         "num_threads": 1, "threading_layer": "pthreads", "prefix": "libscipy_openblas"},
        {"user_api": "blas", "internal_api": "openblas", "version": "0.3.30", "architecture": "SkylakeX",
         "num_threads": 1, "threading_layer": "pthreads", "prefix": "libopenblas"},
        {"user_api": "openmp", "internal_api": "openmp", "version": None, "architecture": None,
         "num_threads": 1, "threading_layer": None, "prefix": "libgomp"}]


def test_the_inventory_does_not_depend_on_the_order_the_blas_libraries_were_loaded(monkeypatch):
    monkeypatch.setattr(inventory, "git_commit", lambda cwd=None: "abc")
    monkeypatch.setattr(gpu, "inventory", lambda: {"gpu": "none"})
    seen = []
    for libs in (LIBS, LIBS[::-1]):
        monkeypatch.setattr(inventory, "blas_info", lambda libs=libs: [dict(lib) for lib in libs])
        seen.append(inventory.inventory())
    assert seen[0] == seen[1]
    assert seen[0]["blas"] == "openblas 0.3.30 SkylakeX threads=1; openblas 0.3.31 SkylakeX threads=1"


def test_a_process_a_session_started_takes_its_count_else_the_default_once(monkeypatch):
    from benchmarks import threads
    assert threads.inherited({threads.THREADS_ENV: "3"}) == 3
    chosen = []
    monkeypatch.setattr(threads, "default_threads", lambda: chosen.append(1) or (5, "probed"))
    threads._default_once.cache_clear()
    try:
        assert [threads.inherited({}), threads.inherited({})] == [5, 5] and chosen == [1]
    finally:
        threads._default_once.cache_clear()


def test_a_session_run_with_the_fault_hook_says_so_and_compare_names_it(monkeypatch):
    """A session slowed or broken on purpose (``BPB_FAULT``, tests/faults.py) must not compare as
    'nothing but the measurements' with one that was not."""
    import pandas as pd
    from reports.compare import session_differences
    monkeypatch.setattr(inventory, "git_commit", lambda cwd=None: "abc")
    monkeypatch.setattr(gpu, "inventory", lambda: {"gpu": "none"})
    monkeypatch.delenv(inventory.FAULT_ENV, raising=False)
    plain = inventory.inventory()
    assert "fault_hook" not in plain
    monkeypatch.setenv(inventory.FAULT_ENV, "tests.faults:slow_numpy_batch_1_5x")
    hooked = inventory.inventory()
    assert hooked["fault_hook"] == "tests.faults:slow_numpy_batch_1_5x"
    a, b = (pd.Series({f"tags.machine.{k}": v for k, v in inv.items()}) for inv in (plain, hooked))
    assert session_differences(a, b)[0] == [("machine.fault_hook", "-", "tests.faults:slow_numpy_batch_1_5x")]
