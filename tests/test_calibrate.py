"""``python -m benchmarks calibrate``: K sessions through the CLI, the table, the run of kind
calibration in the store. The plumbing on a dry run in the default tier; the live A/A claim
(the calibrated cut keeps its false alarms) in the timing tier, for a quiet machine."""
import json
import re

import pytest

from tests.helpers import run_cli

mlflow = pytest.importorskip("mlflow")


def _calibrate(tmp_path, *args, timeout=900, impl="numpy-batch,numpy-sample"):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("calibrate", *args, *(("--impl", impl) if impl else ()), "--tracking-uri", uri,
                   "--output-dir", str(tmp_path / "out"), "--machine", "lab-a", env={"CI": "1"}, timeout=timeout)
    return uri, proc


@pytest.mark.integration
def test_calibrate_runs_k_sessions_and_logs_the_noise_profile(tmp_path):
    uri, proc = _calibrate(tmp_path, "--dry-run", "--sessions", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "calibration: session 2 of 2" in proc.stdout and "A/A calibration on lab-a: 2 dry-run sessions" in proc.stdout
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("backprop-bench").experiment_id
    sessions = client.search_runs([experiment], filter_string="tags.`bpb.kind` = 'session'")
    assert len(sessions) == 2 and all("bpb.calibration" in s.data.tags for s in sessions)
    # one thread count for all: chosen before the first session, whatever the load does after
    assert len({s.data.params["threads"] for s in sessions}) == 1
    assert all("chosen once for the 2 sessions of a calibration" in s.data.tags["bpb.threads_reason"] for s in sessions)
    [run] = client.search_runs([experiment], filter_string="tags.`bpb.kind` = 'calibration'")
    assert run.data.tags["bpb.machine"] == "lab-a" and run.info.status == "FINISHED"
    assert set(run.data.params["sessions"].split(",")) == {s.info.run_id for s in sessions}
    assert {"compare_rate", "calibrated_rate", "detectable_median", "pairs"} <= set(run.data.metrics)
    assert run.data.metrics["pairs"] == 1
    folder = next((tmp_path / "out").glob("calibration-*"))
    saved = json.loads((folder / "calibration.json").read_text())
    # every throughput cell of the dry run's matrix, each seen in both sessions
    cells = {c["cell"] for c in saved["cells"]}
    assert {"throughput/numpy-batch/hw1-q4/float32/b32/s0", "throughput/numpy-sample/hw1-q4/float32/b1/s0"} <= cells
    assert all(c["sessions"] == 2 and c["false alarms, calibrated"].endswith("/1") for c in saved["cells"])
    assert not any(c.startswith("scaling/") or c.startswith("accuracy/") for c in cells)
    assert "false alarms, compare" in (folder / "calibration.md").read_text()
    # compare reads the profile back: the two sessions' cells take their calibrated cuts
    proc = run_cli("compare", "latest~1", "latest", "--tracking-uri", uri, "--output-dir", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"calibrated: {len(saved['numbers'])} cells cut at their noise profile, calibration run " \
           f"{run.info.run_id[:8]} (2 dry-run sessions on lab-a" in proc.stdout
    assert "STALE" not in proc.stdout
    md = next((tmp_path / "cmp").glob("compare-*/compare.md")).read_text()
    assert "calibrated: " in md and "judged by B/A beyond that cut alone" in md and " calibrated |" in md
    assert set(saved["numbers"]) == cells and all(v["cut"] > 0 for v in saved["numbers"].values())
    # the report reads it too: what each cell can detect here, and from which calibration
    proc = run_cli("report", "--tracking-uri", uri, "--output-dir", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = next((tmp_path / "rep").glob("*/report.md")).read_text()
    assert f"calibrated: {len(saved['numbers'])} cells with their detectable slowdown, calibration run " \
           f"{run.info.run_id[:8]}" in report and re.search(r"\|\s*detects here\s*\|", report)
    detects = {f"≥ {v['detectable']:.0%}" for v in saved["numbers"].values() if v["detectable"] != float("inf")}
    assert any(d in report for d in detects), (detects, [l for l in report.splitlines() if "detects" in l or "| throughput" in l][:12])


def test_one_session_is_refused_before_anything_runs(tmp_path):
    uri, proc = _calibrate(tmp_path, "--dry-run", "--sessions", "1")
    assert proc.returncode == 2 and "at least 2 sessions" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.integration
def test_sessions_on_different_thread_counts_make_no_profile(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for threads in ("1", "2"):
        proc = run_cli("bench", "--dry-run", "--impl", "numpy-batch", "--no-scaling", "--threads", threads,
                       "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"), env={"CI": "1"})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc = run_cli("calibrate", "--from", "latest~1,latest", "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "one thread count" in proc.stderr and "on 1, 2 threads" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not list((tmp_path / "out").glob("calibration-*"))


@pytest.mark.timing
def test_a_live_quick_profile_flags_nothing_in_a_a_and_exactly_numpy_batch_slowed_1_5x(tmp_path):
    """The live claim (docs/performance.md, "A/A calibration"): 5 --quick sessions of every
    implementation make the profile, its own false alarms at most 5% of the cell-pairs; then, on
    the thread count the calibration chose, a further A/A pair of --quick sessions, which
    ``compare`` must flag no cell of, and a session with numpy-batch slowed 1.5x
    (tests/faults.py), whose comparison must flag exactly numpy-batch's throughput cells."""
    uri, proc = _calibrate(tmp_path, "--quick", "--sessions", "5", timeout=3600, impl=None)
    assert proc.returncode == 0, proc.stdout[-3000:]
    print(proc.stdout[proc.stdout.index("A/A calibration on"):])
    saved = json.loads(next((tmp_path / "out").glob("calibration-*/calibration.json")).read_text())
    assert saved["summary"]["pairs"] == 10 and saved["summary"]["calibrated_rate"] <= 0.05, saved["summary"]
    threads = re.search(r"calibration: (\d+) threads in every session", proc.stdout).group(1)

    def quick(**env) -> str:
        done = run_cli("bench", "--quick", "--no-scaling", "--threads", threads, "--machine", "lab-a", "--tracking-uri",
                       uri, "--output-dir", str(tmp_path / "out"), env={"CI": "1", **env}, timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:]
        return re.search(r"^session ([0-9a-f]{32}) in ", done.stdout, re.M).group(1)

    def flagged(a: str, b: str) -> set[str]:
        cmp = run_cli("compare", a, b, "--tracking-uri", uri, "--output-dir", str(tmp_path / "cmp"))
        assert cmp.returncode == 0 and "calibrated: " in cmp.stdout and "STALE" not in cmp.stdout, cmp.stdout[-3000:]
        print(cmp.stdout)
        return {line.split()[0] for line in cmp.stdout.splitlines()
                if line.startswith(("throughput/", "accuracy/")) and re.search(r"\s(slower|faster)\s", line)}

    a, b = quick(), quick()
    assert flagged(a, b) == set()
    slow = quick(BPB_FAULT="tests.faults:slow_numpy_batch_1_5x")
    cells = {c["cell"] for c in saved["cells"]}
    assert flagged(b, slow) == {c for c in cells if c.startswith("throughput/numpy-batch/")}
