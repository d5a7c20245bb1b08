"""Shared fixtures. The real Fashion-MNIST files are required: CI installs them
(``apt-get install dataset-fashion-mnist``); a missing copy fails loudly instead of skipping."""
from __future__ import annotations

import pytest

from tests.helpers import tmpfs


@pytest.fixture(scope="session")
def fashion():
    from benchmarks import datasets
    try:
        return datasets.load("fashion-mnist")
    except datasets.DataError as exc:
        pytest.fail(f"the tests need the real Fashion-MNIST files:\n{exc}")


@pytest.fixture(scope="session")
def small(fashion):
    """1,000 real training samples in float64 and their labels."""
    return fashion.features("train", "float64", 1000), fashion.labels("train", 1000)


@pytest.fixture
def full_disk(tmp_path):
    """A 128 kB tmpfs (``tests.helpers.fill`` fills it); skipped where it cannot be mounted."""
    yield from tmpfs(tmp_path / "full", "128k")


@pytest.fixture(autouse=True)
def _cpus_given_back():
    """A test that pins threads in this process with jax-cpu loaded confines it by CPU affinity
    (impls/jax_cpu.py); every later test, and every process it starts, would run on those CPUs.
    Each test gives back the CPUs it found."""
    import os
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    given = os.sched_getaffinity(0)
    yield
    if os.sched_getaffinity(0) != given:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), given)
            except OSError:
                pass


@pytest.fixture(scope="session")
def dry_run(tmp_path_factory, pytestconfig, fashion):
    """One ``bench --dry-run`` session through the CLI, shared by the tests that read it:
    (tracking URI, the finished process, the report folder). Under pytest-xdist the workers
    share one: the first to need it runs it under a lock, the others read what it left."""
    import json
    import os
    import subprocess
    from filelock import FileLock
    from tests.helpers import run_cli
    workers = hasattr(pytestconfig, "workerinput")
    root = tmp_path_factory.getbasetemp().parent if workers else tmp_path_factory.getbasetemp()
    folder, saved = root / "dry-run", root / "dry-run.json"
    with FileLock(str(root / "dry-run.lock")):
        if not saved.exists():
            folder.mkdir(exist_ok=True)
            # the thread settings it starts with, as they are now: a test may change this
            # process's environment later (jax's XLA_FLAGS), and the session must not be judged by that
            from benchmarks.inventory import thread_env
            (folder / "thread_env.json").write_text(json.dumps(thread_env({**os.environ, "CI": "1"})))
            uri = f"sqlite:///{folder / 'mlflow.db'}"
            proc = run_cli("bench", "--dry-run", "--tracking-uri", uri, "--output-dir", str(folder / "report"),
                           env={"CI": "1"})
            saved.write_text(json.dumps({"uri": uri, "args": [str(a) for a in proc.args], "rc": proc.returncode,
                                         "stdout": proc.stdout, "stderr": proc.stderr}))
    run = json.loads(saved.read_text())
    proc = subprocess.CompletedProcess(run["args"], run["rc"], run["stdout"], run["stderr"])
    return run["uri"], proc, folder / "report"


# Under pytest-xdist (tox -e test runs ``-n 2 --dist loadfile``) a file's tests stay on one
# worker, so a module-scoped fixture (the gate's session, the eight sessions on the server) is
# built once. Each worker sends the files that take longest first, so that neither is left with
# the gate at the end; the rest follow in file order. Per-worker session fixtures (PostgreSQL,
# Chromium) start in seconds; the dry-run session is built once for both.
LONGEST_FIRST = ("test_gate.py", "test_server.py", "test_fleet.py", "test_gate_faults.py", "test_store.py",
                 "test_commands.py", "test_failure.py", "test_pages.py", "test_session.py", "test_server_children.py", "test_compare.py")


def pytest_collection_modifyitems(config, items):
    mark_gpu_rows(items)
    if hasattr(config, "workerinput"):                  # an xdist worker
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: file order kept


def mark_gpu_rows(items):
    """The conformance suite's rows of GPU implementations are GPU tests too, so that
    ``pytest -m gpu`` (gpu-check) runs them; elsewhere they skip with the registry's reason."""
    named = [(item, item.callspec.params["name"]) for item in items
             if "name" in getattr(getattr(item, "callspec", None), "params", {})]
    if not named:
        return                        # no parametrized implementation: no backend imported
    import impls
    # a backend that is not installed (a peer's) is not imported: its rows skip with the reason
    gpu_names = {n for n in impls.names()
                 if not (impls.available_reason(n) or "").startswith("cannot import") and impls.get(n).needs_gpu}
    for item, name in named:
        if isinstance(name, str) and name in gpu_names:
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session")
def pg_cluster():
    """One real PostgreSQL for the whole run, started and stopped through the project's own
    command (``python -m benchmarks pg start|stop``, tracking/pg.py), as users and CI start it;
    the tests that use it give each their own database. Skipped only where PostgreSQL is not
    installed. A test that stops it (a database down) starts it again before it ends."""
    import shutil
    import tempfile
    from pathlib import Path
    from tests.helpers import run_cli
    from tracking import pg
    if pg.installed() is not None:
        pytest.skip(f"needs PostgreSQL: {pg.installed()}")
    base = Path(tempfile.mkdtemp(prefix="bpb-pg-"))       # short: a unix socket's path is at most 107 bytes
    base.chmod(0o755)            # as root the cluster runs as postgres, who must reach the folder
    folder = base / "pg"
    started = run_cli("pg", "start", "--pg-dir", str(folder))
    assert started.returncode == 0, started.stderr
    assert "postgresql+psycopg://" in started.stdout
    yield pg.Cluster(folder)
    stopped = run_cli("pg", "stop", "--pg-dir", str(folder))
    shutil.rmtree(base, ignore_errors=True)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr


@pytest.fixture(scope="session")
def chromium():
    """The path of Chromium (apt's), or a skip naming how to install it."""
    import shutil
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no Chromium here (apt-get install chromium)")
    return found


@pytest.fixture(scope="session")
def browser(chromium):
    """One headless Chromium (benchmarks/browser.py) for the run's pages, each opened in turn."""
    from benchmarks.browser import Browser
    with Browser(chromium) as opened:
        yield opened

