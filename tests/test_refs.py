"""``latest`` and ``latest~N``: the last FINISHED bench session of one mode, whatever failed,
was killed, ran as a gate or is still running after it. Sessions are written straight into a
temporary store (``tests.helpers.fake_session``): nothing trains."""
import os
import time

import pytest

import tracking
from benchmarks.compare import resolve_pair
from tests.helpers import fake_session, run_cli, sqlite_uri

CELLS = {"accuracy/numpy-batch/hw1-q3/float32/b256/s0": (0.87, 1e5),
         "throughput/numpy-batch/hw1-q4/float32/b256/s0": (None, 3e5)}
DEAD_PID = "999999999"            # above any pid_max: no process has it
pytestmark = pytest.mark.integration      # a real MLflow store: seconds to write


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Oldest first: full, quick, full, a FAILED dry run, a gate, a full session whose process
    died (reaped: KILLED), and a full session still running in this process."""
    folder = tmp_path_factory.mktemp("latest")
    uri = sqlite_uri(folder)
    ids = {}
    for name, mode, status, tags in [("full", "full", "FINISHED", None), ("quick", "quick", "FINISHED", None),
                                     ("full2", "full", "FINISHED", None), ("dry", "dry-run", "FAILED", None),
                                     ("gate", "regress", "FINISHED", None),
                                     ("killed", "full", "RUNNING", {"bpb.pid": DEAD_PID}),
                                     ("running", "full", "RUNNING", None)]:
        ids[name] = fake_session(uri, mode, status, CELLS, tags=tags)
        time.sleep(0.01)          # distinct start times: the store orders sessions by them
    handle = tracking.connect(uri)
    tracking.reap_stale(handle)   # (the next session's start already did)
    statuses = dict(zip(tracking.list_sessions(handle)["run_id"], tracking.list_sessions(handle)["status"]))
    assert statuses[ids["killed"]] == "KILLED" and statuses[ids["running"]] == "RUNNING"
    return uri, folder, ids


def test_latest_skips_failed_killed_running_dry_run_and_gate_sessions(store):
    uri, _, ids = store
    resolve = lambda ref, **kw: tracking.resolve_ref(tracking.connect(uri), ref, **kw)       # noqa: E731
    assert resolve("latest") == ids["full2"] and resolve("latest~1") == ids["full"]
    assert resolve("latest", mode="quick") == ids["quick"]
    assert resolve("latest", mode="regress") == ids["gate"]
    # every status: the running session, then the killed one, of the newest bench session's mode
    assert [resolve(f"latest~{n}", any_status=True) for n in range(3)] == [ids["running"], ids["killed"], ids["full2"]]
    assert resolve("latest", mode="dry-run", any_status=True) == ids["dry"]
    assert resolve(ids["dry"]) == ids["dry"]                               # a run id is taken as given
    with pytest.raises(tracking.TrackingError, match="no benchmark session of mode dry-run that FINISHED"):
        resolve("latest", mode="dry-run")
    with pytest.raises(tracking.TrackingError, match=r"latest~2: .* holds 2 FINISHED full session\(s\)"):
        resolve("latest~2")


def test_compare_an_id_with_latest_means_the_latest_of_its_mode(store):
    uri, _, ids = store
    handle = tracking.connect(uri)
    assert resolve_pair(handle, ids["quick"], "latest", None, False) == (ids["quick"], ids["quick"])
    assert resolve_pair(handle, "latest~1", "latest", None, False) == (ids["full"], ids["full2"])
    assert resolve_pair(handle, "latest", ids["gate"], None, False) == (ids["gate"], ids["gate"])


@pytest.mark.integration
def test_report_renders_the_latest_finished_session_and_links_only_it(store, tmp_path):
    uri, _, ids = store
    out = tmp_path / "out"
    proc = run_cli("report", "--tracking-uri", uri, "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(out / "latest") == ids["full2"]
    failed = run_cli("report", "--mode", "dry-run", "--any-status", "--tracking-uri", uri, "--output-dir", str(out))
    assert failed.returncode == 0, failed.stderr
    md = (out / ids["dry"] / "report.md").read_text()
    assert md.startswith("# backprop-bench report: FAILED session\n\n**FAILED: this session did not finish (made "
                         "FAILED by a test)")
    assert '<h1>backprop-bench report: FAILED session</h1><p class="banner">FAILED: this session did not finish' in (
        out / ids["dry"] / "report.html").read_text()
    assert os.readlink(out / "latest") == ids["full2"] and "not linked as" in failed.stdout
    gate = run_cli("report", "--mode", "regress", "--tracking-uri", uri, "--output-dir", str(out))
    assert gate.returncode == 0 and (out / ids["gate"] / "report.md").is_file()
    assert os.readlink(out / "latest") == ids["full2"]
    assert "FINISHED session" not in (out / ids["gate"] / "report.md").read_text().splitlines()[0]


@pytest.mark.integration
def test_no_finished_session_of_the_kind_is_a_clear_error(tmp_path):
    uri = sqlite_uri(tmp_path)
    dry = fake_session(uri, "dry-run", "FAILED", CELLS)
    proc = run_cli("report", "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no benchmark session (full, quick or dry-run) that FINISHED" in proc.stderr
    assert f"the newest session, {dry}, a dry-run session, is FAILED: --any-status counts it" in proc.stderr
    assert not (tmp_path / "out" / "latest").exists()
