"""One bench command across a real Ray fleet (benchmarks/fleet.py): two Ray nodes on this
machine, started with ``python -m benchmarks fleet-host`` and labelled a and b, against the team
server on the run's PostgreSQL; at the end host b is killed and a second host labelled a joins,
to share a's matrix (``--hosts shard``). Nothing of Ray is mocked. The tests run in file order."""
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.helpers import run_cli
from tests.team_server import Server, free_port

pytestmark = pytest.mark.integration
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def server(pg_cluster, tmp_path_factory):
    srv = Server(pg_cluster.folder, tmp_path_factory.mktemp("fleet-server"), "--pg-database", "fleet_test").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fleet():
    """The head (host a) and a second node (host b); ``ray stop`` ends both."""
    if not RAY.exists():
        pytest.fail("Ray is a requirement (requirements.txt): install it")
    head = run_cli("fleet-host", "--head", "--label", "a", "--port", str(free_port()), timeout=180)
    try:
        assert head.returncode == 0, head.stdout + head.stderr
        address = re.search(r"joined the fleet at (\S+);", head.stdout).group(1)
        other = run_cli("fleet-host", "--label", "b", "--address", address, timeout=180)
        assert other.returncode == 0 and "host 'b' joined" in other.stdout, other.stdout + other.stderr
        yield address
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)


def test_every_host_runs_the_matrix_and_its_cells_say_where(fleet, server, tmp_path):
    proc = run_cli("bench", "--dry-run", "--ray", fleet, "--impl", "numpy-batch,numpy-sample",
                   "--tracking-uri", server.url, "--output-dir", str(tmp_path), env={"CI": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    sessions = dict(re.findall(r"^\[(a|b)\] session ([0-9a-f]{32}) in ", proc.stdout, re.M))
    assert set(sessions) == {"a", "b"}, proc.stdout[-3000:]
    client = mlflow.MlflowClient(server.url)
    nodes = set()
    for label, run_id in sessions.items():
        parent = client.get_run(run_id)
        assert parent.info.status == "FINISHED" and parent.data.tags["bpb.machine"] == label
        # the host's own inventory and peak probe, taken there
        assert parent.data.tags["machine.cpu_model"] and float(parent.data.params["peak_gemm_gflops_float32"]) > 0
        assert parent.data.tags["bpb.ray_node"] and parent.data.tags["bpb.fleet_host"]
        cells = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
        assert len(cells) == 7, [c.data.tags.get("mlflow.runName") for c in cells]
        for cell in cells:                     # each cell: finished, its label, the host and node it ran on
            assert cell.info.status == "FINISHED", cell.data.tags.get("mlflow.runName")
            assert cell.data.tags["bpb.machine"] == label and cell.data.tags["bpb.fleet_host"]
            nodes.add((label, cell.data.tags["bpb.ray_node"]))
    assert len(nodes) == 2 and {label for label, _ in nodes} == {"a", "b"}     # one node per label
    # the machines side by side at the end, with no extra command
    report = re.search(r"^2 machines: (.*)$", proc.stdout, re.M)
    assert report and {"a", "b"} <= set(re.findall(r"\b(a|b) \(", report.group(1))), proc.stdout[-2000:]
    [page] = tmp_path.glob("machines-*/machines.md")
    assert all(sessions[label][:8] in page.read_text() for label in "ab")


def runs(url: str) -> int:
    client = mlflow.MlflowClient(url)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000))


def test_an_unreachable_fleet_or_a_local_store_is_refused_before_anything_is_written(server, tmp_path):
    before = runs(server.url)
    port = free_port()                               # nobody listens there
    proc = run_cli("bench", "--dry-run", "--ray", f"127.0.0.1:{port}", "--impl", "numpy-batch",
                   "--tracking-uri", server.url, "--output-dir", str(tmp_path), env={"CI": "1"}, timeout=60)
    assert proc.returncode == 2 and "cannot reach the Ray cluster" in proc.stderr and "fleet-host" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert runs(server.url) == before
    store = tmp_path / "m.db"
    proc = run_cli("bench", "--dry-run", "--ray", f"127.0.0.1:{port}", "--tracking-uri", f"sqlite:///{store}",
                   "--output-dir", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "benchmarks server" in proc.stderr and not store.exists(), proc.stderr


def host_processes(label: str) -> list[int]:
    """Every process of the host labelled ``label``: its raylet and what it started carry the
    label in their environment (``fleet-host``)."""
    mark, found = f"BPB_MACHINE={label}".encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def cell_in_flight(client, label: str, started: int, proc) -> str:
    """The experiment of the session of host ``label`` begun after ``started`` (ms), once that
    session has finished a cell and runs the next."""
    import time
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        experiment = client.get_experiment_by_name("backprop-bench")       # made by the first session
        found = experiment and client.search_runs(
            [experiment.experiment_id], f"tags.`bpb.kind` = 'session' and tags.`bpb.machine` = '{label}' "
                                        f"and attributes.start_time >= {started}")
        if found:
            cells = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{found[0].info.run_id}'")
            states = [c.info.status for c in cells]
            if "RUNNING" in states and "FINISHED" in states:
                return experiment.experiment_id
        time.sleep(0.2)
    raise AssertionError(f"host {label} never had a cell in flight")


def session_under_way(fleet, server, tmp_path, labels: str, *more: str):
    """A dry-run of three implementations on the fleet (with options ``more``), returned once
    each host of ``labels`` has a cell in flight: (client, experiment id, start in ms, the
    driver's process)."""
    import time
    from tests.helpers import popen_cli
    client = mlflow.MlflowClient(server.url)
    started = int(time.time() * 1000)
    proc = popen_cli("bench", "--dry-run", "--ray", fleet, "--impl", "numpy-sample,numpy-batch,numba-batch", *more,
                     "--tracking-uri", server.url, "--output-dir", str(tmp_path), env={"CI": "1"})
    experiment = [cell_in_flight(client, label, started, proc) for label in labels][-1]
    return client, experiment, started, proc


# Failed in 2 of about 10 runs on 2026-12-06, under load: a session was left RUNNING after the
# driver exited 130, when a closing step failed before the status write. tracking/ now writes
# the status after trying every other step, and this test is in the default tier again
def test_sigterm_on_the_driver_kills_every_host_s_cell_and_session(fleet, server, tmp_path):
    import signal
    # both sessions open, and each long enough (numpy-sample on 20,000 samples) that a host whose
    # first cell ended soon cannot end its session before the other host's first cell ends
    client, experiment, started, proc = session_under_way(fleet, server, tmp_path, "ab",
                                                          "--train-limit", "20000", "--epochs", "2")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "results written so far are kept" in err and "Traceback" not in err, err[-2000:]
    sessions = client.search_runs([experiment], f"tags.`bpb.kind` = 'session' and attributes.start_time >= {started}")
    assert sorted(s.data.tags["bpb.machine"] for s in sessions) == ["a", "b"]
    for parent in sessions:
        assert parent.info.status == "KILLED", (parent.data.tags.get("bpb.machine"), out[-3000:], err[-1000:])
        cells = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert cells and all(c.info.status in ("FINISHED", "KILLED") for c in cells)      # nothing left RUNNING


def test_a_host_that_dies_mid_session_fails_its_cells_and_the_other_host_finishes(fleet, server, tmp_path):
    """Host b does not come back."""
    import os
    import signal
    client, experiment, started, proc = session_under_way(fleet, server, tmp_path, "b")
    for pid in host_processes("b"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in err, out[-3000:] + err[-3000:]
    by_label = {}
    for label in "ab":
        [parent] = client.search_runs([experiment], f"tags.`bpb.kind` = 'session' and tags.`bpb.machine` = '{label}' "
                                                    f"and attributes.start_time >= {started}")
        cells = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        by_label[label] = parent, {c.data.tags["mlflow.runName"]: c for c in cells}
    parent_a, cells_a = by_label["a"]
    assert parent_a.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in cells_a.values())
    parent_b, cells_b = by_label["b"]
    assert parent_b.info.status in ("FINISHED", "FAILED") and parent_b.info.status != "RUNNING"
    assert all(c.info.status in ("FINISHED", "FAILED") for c in cells_b.values())    # nothing left RUNNING
    # the cell in flight: FAILED, node lost; the cells after it never started, and are listed so.
    # Under load the cell seen RUNNING can end in the moment before the kill lands (a dry-run cell
    # is a second or less): the kill then falls between two cells, no run is FAILED, and every
    # cell after the last FINISHED one is listed as never started (the count below checks it)
    reasons = [c.data.tags.get("bpb.failure_reason", "") for c in cells_b.values() if c.info.status == "FAILED"]
    assert len(reasons) <= 1 and all("node lost" in r for r in reasons), reasons
    never = [line for line in out.splitlines() if line.startswith("[b]   ") and "never started" in line]
    assert never and all("FAILED" in line and "node lost" in line for line in never), out[-3000:]
    assert len(cells_b) + len(never) == len(cells_a), (sorted(cells_b), never)


def test_the_hosts_of_one_label_share_its_matrix_and_each_cell_runs_once(fleet, server, tmp_path):
    """After host b is killed (above): a second host labelled a joins, and ``--hosts shard``
    gives the two of them one session, whose cells are exactly the local plan's."""
    from benchmarks.plan import BenchOptions, plan
    joined = run_cli("fleet-host", "--label", "a", "--address", fleet, timeout=180)
    assert joined.returncode == 0 and "host 'a' joined" in joined.stdout, joined.stdout + joined.stderr
    proc = run_cli("bench", "--dry-run", "--ray", fleet, "--hosts", "shard", "--impl", "numpy-batch,numpy-sample",
                   "--tracking-uri", server.url, "--output-dir", str(tmp_path), env={"CI": "1"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "a's matrix shared by 2 hosts" in proc.stdout, proc.stdout[:2000]
    [run_id] = re.findall(r"^\[a\] session ([0-9a-f]{32}) in ", proc.stdout, re.M)      # one session for a
    client = mlflow.MlflowClient(server.url)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["bpb.hosts"] == "shard"
    cells = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    local, _ = plan(BenchOptions.make("dry-run", impls=("numpy-batch", "numpy-sample")))
    assert sorted(c.data.tags["bpb.cell"] for c in cells) == sorted(c.name for c in local)    # each once
    assert all(c.info.status == "FINISHED" and c.data.tags["bpb.machine"] == "a" for c in cells)
    assert len({c.data.tags["bpb.ray_node"] for c in cells}) == 2                          # both hosts ran cells
