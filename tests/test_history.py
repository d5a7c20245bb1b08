"""``history`` and its step detector: on synthetic series (20 flat noisy ones must give no step)
and end to end on a seeded history of 40 sessions in a temporary store and git repository
(tests/seed_history.py), where every injected step must be found at its commit."""
import math
import re
import subprocess

import numpy as np
import pytest

from reports.stats import detect_steps
from tests.helpers import fake_profile, fake_session, run_cli, sqlite_uri
from tests.seed_history import ACC_DROP_AT, HOST, SPEED, git_repo, seed_history

LOG5 = math.log(1.05)


def noisy(level, n, sigma, rng, outliers=0.0):
    return np.log(level * np.exp(rng.normal(0, sigma, n)) * np.where(rng.random(n) < outliers, 0.6, 1.0))


def test_twenty_flat_noisy_series_give_no_step():
    rng = np.random.default_rng(7)
    found = [detect_steps(noisy(100, 40, sigma, rng, outliers=0.05), min_effect=LOG5)
             for sigma in np.linspace(0.01, 0.15, 20)]
    assert sum(map(len, found)) == 0, found


@pytest.mark.parametrize("seed", range(5))
def test_injected_steps_are_found_where_they_are(seed):
    rng = np.random.default_rng(seed)
    twice = np.r_[noisy(100, 16, 0.08, rng), noisy(50, 24, 0.08, rng)]            # 2x slower at commit 17
    assert [s["index"] for s in detect_steps(twice, min_effect=LOG5)] == [16]
    quiet = np.r_[noisy(100, 24, 0.01, rng), noisy(90, 16, 0.01, rng)]            # 10% slower at commit 25
    assert [abs(s["index"] - 24) <= 1 for s in detect_steps(quiet, min_effect=LOG5)] == [True]
    acc = np.r_[0.87 + rng.normal(0, 0.003, 29), 0.85 + rng.normal(0, 0.003, 11)]  # -2 points at commit 30
    steps = detect_steps(acc, min_effect=0.005)
    assert len(steps) == 1 and abs(steps[0]["index"] - 29) <= 1
    assert steps[0]["after"] - steps[0]["before"] == pytest.approx(-0.02, abs=0.005)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return seed_history(tmp_path_factory.mktemp("seeded"), n=40)


@pytest.mark.integration
def test_history_finds_every_injected_step_at_its_commit(seeded, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("history", "--repo", str(seeded["repo"]), "--tracking-uri", seeded["uri"],
                   "--output-dir", str(out), "--machine", HOST, env={"CI": "1"})
    assert proc.returncode == 0, proc.stderr
    commits = seeded["commits"]
    steps = re.findall(r"^(\S+) (\S+): (\S+ ?\S*) at ([0-9a-f]{7})$", proc.stdout, re.M)
    assert all(cell.startswith("synthetic/") for cell, *_ in steps)          # the sessions' mode
    found = {(cell.split("/")[2], metric): (change, commit) for cell, metric, change, commit in steps}
    for impl, (*_, factor, at) in SPEED.items():
        if at is None:
            assert (impl, "samples_per_second") not in {(c.split("/")[2], m) for c, m, *_ in steps if "throughput" in c}
            continue
        change, commit = found[(impl, "samples_per_second")]
        assert commit == commits[at - 1][:7], (impl, commit)
        assert float(change.rstrip("%")) == pytest.approx(100 * (1 / factor - 1), abs=5)
    change, commit = found[("numpy-batch", "test_accuracy")]
    assert commit == commits[ACC_DROP_AT - 1][:7] and change.startswith("-2")
    assert len(steps) == 3, proc.stdout
    page = (out / "history" / "history.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "at " + commits[16][:7] in page


@pytest.mark.integration
def test_history_is_logged_as_a_run_and_filters_say_what_they_left_out(seeded, tmp_path):
    import mlflow
    client = mlflow.MlflowClient(seeded["uri"])
    exp = client.get_experiment_by_name("backprop-bench")
    proc = run_cli("history", "--repo", str(seeded["repo"]), "--tracking-uri", seeded["uri"], "--output-dir",
                   str(tmp_path), "--commits", f"{seeded['commits'][9]}..main", "--cell", "torch-cpu")
    assert proc.returncode == 0, proc.stderr
    assert "history: 30 sessions over 30 commits (synthetic 30); 10 left out" in proc.stdout
    assert "no step found" in proc.stdout
    runs = client.search_runs([exp.experiment_id], "tags.`bpb.kind` = 'history'")
    assert runs and "history/history.html" in {a.path for a in client.list_artifacts(runs[0].info.run_id, "history")}
    proc = run_cli("history", "--repo", str(seeded["repo"]), "--tracking-uri", seeded["uri"], "--machine", "nobody")
    assert proc.returncode == 2 and "no cell matches" in proc.stderr


@pytest.mark.integration
def test_modes_and_schedules_are_series_of_their_own(tmp_path):
    """A full and a quick session at each of 12 commits (accuracy 0.87 and 0.55, the quick one
    on one epoch of 20,000 samples): two flat series, no step; --mode keeps one."""
    commits = git_repo(tmp_path / "repo", 12)
    uri = sqlite_uri(tmp_path)
    acc = "accuracy/numpy-batch/hw1-q3/float32/b256/s0"
    for i, commit in enumerate(commits):
        for mode, value, epochs in (("full", 0.87, 5), ("quick", 0.55, 1)):
            fake_session(uri, mode, cells={acc: (value + 0.001 * (i % 2), 1e5)}, tags={"git_commit": commit},
                         epochs=epochs)
    args = ("history", "--repo", str(tmp_path / "repo"), "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"),
            "--cell", "numpy-batch")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "history: 24 sessions over 12 commits (full 12, quick 12)" in proc.stdout and "no step found" in proc.stdout
    md = (tmp_path / "out" / "history" / "history.md").read_text()
    assert "2 cells" in md
    proc = run_cli(*args, "--mode", "quick")
    assert proc.returncode == 0 and "history: 12 sessions over 12 commits (quick 12); 12 left out" in proc.stdout
    assert "1 cells" in (tmp_path / "out" / "history" / "history.md").read_text()


@pytest.mark.parametrize("option", ["--branch", "--commits"])
@pytest.mark.integration
def test_a_revision_that_looks_like_an_option_is_refused_before_git_reads_it(option, tmp_path):
    """``--branch=--output=FILE`` once reached ``git rev-list`` as an option, which truncated FILE."""
    repo, victim = tmp_path / "repo", tmp_path / "precious.txt"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    victim.write_text("kept\n")
    proc = run_cli("history", "--repo", str(repo), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                   "--output-dir", str(tmp_path / "out"), f"{option}=--output={victim}")
    assert victim.read_text() == "kept\n"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"'--output={victim}' is not a revision" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.integration
def test_a_noise_profile_judges_its_cells_speed_steps_by_their_measured_noise(tmp_path):
    """numpy-batch's 10% slowdown at commit 25 stands out of its own quiet series (1% noise). A
    noise profile of the machine that says the cell drifts 10% between sessions makes the same
    step noise: history takes that cell's noise from the profile, and says so; numba-batch's
    2x, outside the profile, is still found by its own series."""
    from reports.noise import Z_ALARM
    seeded = seed_history(tmp_path / "seeded", n=40)
    args = ("history", "--repo", str(seeded["repo"]), "--tracking-uri", seeded["uri"], "--output-dir",
            str(tmp_path / "out"), "--machine", HOST)
    before = run_cli(*args)
    assert before.returncode == 0, before.stderr
    assert "uncalibrated: no noise profile of seeded-host for synthetic sessions" in before.stdout
    assert re.search(r"/throughput/numpy-batch/hw1-q4/float32/b256 samples_per_second: -1[01]% at", before.stdout)
    run_id = fake_profile(seeded["uri"], HOST, "synthetic", {"throughput/numpy-batch/hw1-q4/float32/b256/s0":
                                                             Z_ALARM * math.sqrt(2) * 0.10},
                          seeded["commits"][-1], tmp_path)
    after = run_cli(*args)
    assert after.returncode == 0, after.stderr
    assert (f"calibrated: 1 cells judged by their noise profile (speed steps), calibration run {run_id[:8]} "
            "(5 synthetic sessions on seeded-host") in after.stdout
    assert "numpy-batch/hw1-q4/float32/b256 samples_per_second" not in after.stdout
    assert re.search(r"/throughput/numba-batch/hw1-q4/float32/b256 samples_per_second: -(4[5-9]|5[0-5])% at", after.stdout)
    assert "calibrated: 1 cells" in (tmp_path / "out" / "history" / "history.md").read_text()
