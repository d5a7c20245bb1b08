"""``compare``: the verdict logic on recorded and synthetic repeats (no live timing), what
differs between two sessions, and the command end to end on real sessions read back from a
store. The live check that a 3x slowdown is flagged on real timings is in the ``timing`` tier."""
import numpy as np
import pandas as pd
import pytest

from reports.compare import compare_cells, exit_reasons, session_differences
from tests.helpers import fake_session, run_cli, sqlite_uri

CELLS = ["throughput/numpy-batch/hw1-q4/float32/b256/s0", "throughput/numpy-sample/hw1-q4/float32/b1/s0",
         "accuracy/numpy-batch/hw1-q3/float32/b256/s0"]


def session(tag, rates: dict, acc=0.87, parity=1e-6, status="FINISHED"):
    rows = [{"run_id": f"{tag}{i}", "cell": c, "status": status, "test_accuracy": acc if c.startswith("accuracy") else
             float("nan"), "parity_max_error": parity} for i, c in enumerate(rates)]
    return pd.DataFrame(rows), {f"{tag}{i}": list(r) for i, r in enumerate(rates.values())}


def noisy(center, n=5, spread=0.05, seed=0):
    return list(center * np.exp(np.random.default_rng(seed).normal(0, spread, n)))


def verdicts(table):
    return dict(zip(table["cell"], table["kind"]))


def test_same_distributions_are_no_significant_change():
    a = session("a", {c: noisy(1e5, seed=k) for k, c in enumerate(CELLS)})
    b = session("b", {c: noisy(1e5, seed=10 + k) for k, c in enumerate(CELLS)})
    assert set(verdicts(compare_cells(*a, *b)).values()) == {"same"}


def test_a_3x_slowdown_is_flagged_on_exactly_its_cells():
    a = session("a", {c: noisy(1e5, seed=k) for k, c in enumerate(CELLS)})
    b = session("b", {c: noisy(1e5 / (3 if "numpy-batch" in c else 1), seed=10 + k) for k, c in enumerate(CELLS)})
    got = verdicts(compare_cells(*a, *b))
    assert {c for c, k in got.items() if k != "same"} == {CELLS[0], CELLS[2]}
    assert got[CELLS[0]] == got[CELLS[2]] == "slower"


def test_a_change_inside_the_threshold_or_with_too_few_repeats_is_not_a_verdict():
    a = session("a", {CELLS[0]: noisy(1e5, spread=0.001), CELLS[1]: [1e5, 1e5]})
    b = session("b", {CELLS[0]: noisy(0.95e5, spread=0.001, seed=1), CELLS[1]: [5e4, 5e4]})
    t = compare_cells(*a, *b)
    assert verdicts(t) == {CELLS[0]: "same", CELLS[1]: "unknown"}        # -5% is significant, not beyond 10%
    assert "too few repeats" in t.set_index("cell").loc[CELLS[1], "verdict"]


def test_cells_in_one_session_only_and_accuracy_drops_are_listed():
    a = session("a", {CELLS[0]: noisy(1e5), CELLS[2]: noisy(1e5)})
    b = session("b", {CELLS[1]: noisy(1e5), CELLS[2]: noisy(1e5)}, acc=0.85)
    table = compare_cells(*a, *b)
    t = table.set_index("cell")
    assert t.loc[CELLS[0], "kind"] == "only in A" and t.loc[CELLS[1], "kind"] == "only in B"
    assert bool(t.loc[CELLS[2], "accuracy_drop"]) and not t.loc[CELLS[1], "accuracy_drop"]
    assert t.loc[CELLS[2], "acc/parity"] == "worse"
    # a cell on one side only is no failure unless asked for; each failure says why
    assert exit_reasons(table, "accuracy") == [(CELLS[2], "test accuracy 0.8700 -> 0.8500 (-0.0200, tolerance 0.005)")]
    assert exit_reasons(table, "slower") == []
    assert exit_reasons(table, None, missing=True) == [(CELLS[0], "in A, missing from B (--fail-on-missing)")]


def test_an_accuracy_drop_is_seen_even_with_one_epoch():
    """A --quick or gate accuracy cell has one or two epochs: no speed verdict, but accuracy counts."""
    a = session("a", {CELLS[2]: [1e5]})
    b = session("b", {CELLS[2]: [1e5]}, acc=0.80)
    t = compare_cells(*a, *b).set_index("cell")
    assert t.loc[CELLS[2], "kind"] == "unknown" and bool(t.loc[CELLS[2], "accuracy_drop"])


def test_half_the_cells_slowed_still_stand_out():
    """When half the cells moved, the drift estimate is the move itself: the cut is capped."""
    cells = [f"throughput/impl{k}/hw1-q4/float32/b{b}/s0" for k in (1, 2) for b in (1, 32, 256, 1024)]
    a = session("a", {c: noisy(1e5, seed=i) for i, c in enumerate(cells)})
    b = session("b", {c: noisy(1e5 / (3 if "impl2" in c else 1), seed=20 + i) for i, c in enumerate(cells)})
    got = verdicts(compare_cells(*a, *b))
    assert {c for c, k in got.items() if k == "slower"} == {c for c in cells if "impl2" in c}


def test_only_what_differs_is_shown_and_another_machine_is_said_plainly():
    a = pd.Series({"params.option.repeats": "5", "params.threads": "2", "tags.git_commit": "aaa",
                   "tags.bpb.host": "one", "tags.machine.cpu_model": "AMD EPYC", "tags.machine.version_numpy": "2.1"})
    b = a.copy()
    b["tags.git_commit"] = "bbb"
    diffs, note = session_differences(a, b)
    assert diffs == [("git_commit", "aaa", "bbb")] and note is None
    b["tags.bpb.host"], b["tags.machine.cpu_model"] = "two", "Intel Xeon"
    diffs, note = session_differences(a, b)
    assert note.startswith("DIFFERENT MACHINES") and "Intel Xeon" in note


def test_one_machine_stays_one_machine_under_a_reordered_blas_list_and_new_software():
    """The BLAS libraries were listed in load order, which changes from run to run: sessions
    recorded so must still read as one machine; other software is named, not a machine."""
    a = pd.Series({"tags.bpb.host": "one", "tags.bpb.machine": "one", "tags.machine.cpu_model": "AMD EPYC",
                   "tags.machine.cpu_cores": "2", "tags.machine.version_numpy": "2.1",
                   "tags.machine.blas": "openblas 0.3.31 SkylakeX threads=1; openblas 0.3.30 SkylakeX threads=1",
                   "tags.machine.threads_blas": "openblas:1;mkl:1"})
    b = a.copy()
    b["tags.machine.blas"] = "openblas 0.3.30 SkylakeX threads=1; openblas 0.3.31 SkylakeX threads=1"
    b["tags.machine.threads_blas"] = "mkl:1;openblas:1"
    assert session_differences(a, b) == ([], None)
    b["tags.machine.version_numpy"] = "2.2"
    diffs, note = session_differences(a, b)
    assert diffs == [("machine.version_numpy", "2.1", "2.2")]
    assert note == "same machine (one, AMD EPYC, 2 cores), different software: version_numpy 2.1 -> 2.2"
    for key, value in (("tags.machine.cpu_cores", "4"), ("tags.bpb.machine", "other")):
        c = b.copy()
        c[key] = value
        assert session_differences(a, c)[1].startswith("DIFFERENT MACHINES"), key


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory):
    # one thread for both: the default count is chosen per session by a probe, and a different
    # count is a difference in settings, which the comparison would rightly name
    folder = tmp_path_factory.mktemp("cmp")
    uri = f"sqlite:///{folder / 'm.db'}"
    for _ in range(2):
        proc = run_cli("bench", "--dry-run", "--impl", "numpy-sample,numpy-batch", "--threads", "1", "--tracking-uri", uri,
                       "--output-dir", str(folder / "out"), env={"CI": "1"})
        assert proc.returncode == 0, proc.stderr
    return uri, folder


@pytest.mark.integration
def test_compare_two_real_sessions_through_the_cli(two_sessions):
    uri, folder = two_sessions
    proc = run_cli("compare", "latest~1", "latest", "--tracking-uri", uri, "--output-dir", str(folder / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "differs: nothing but the measurements" in proc.stdout
    import re
    rows = [re.split(r"\s{2,}", line) for line in proc.stdout.splitlines() if line.startswith(("throughput/", "accuracy/"))]
    assert len(rows) == 7
    for r in rows:                             # same tree, same seed: the same accuracy and parity
        assert r[-5] == r[-4] and r[-3] == r[-2] and r[-1] == "ok", r
    pages = list((folder / "out").glob("compare-*/compare.html"))
    assert len(pages) == 1 and "95%" in pages[0].read_text()
    # one number per implementation: its geometric mean of B/A, here and in each session's headline
    [overall] = [line for line in proc.stdout.splitlines() if line.startswith("Overall, the geometric mean of B/A")]
    assert "numpy-batch " in overall and "(2 cells)" in overall and "numpy-sample " in overall
    assert overall in pages[0].read_text()
    for report in (folder / "out").glob("*/report.md"):
        text = report.read_text().split("## Flags")[0]
        assert "Overall, the geometric mean of speed-ups over numpy-sample" in text and "numpy-batch " in text
    import mlflow
    b = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("backprop-bench").experiment_id],
        "tags.`bpb.kind` = 'session'", order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert "compare" in {a.path for a in mlflow.MlflowClient(uri).list_artifacts(b.info.run_id)}
    for bad, needle in (("latest~5", "holds 2 FINISHED dry-run session(s)"), ("nope", "not an MLflow run id")):
        proc = run_cli("compare", bad, "latest", "--tracking-uri", uri)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


ACC = "accuracy/numpy-batch/hw1-q3/float32/b256/s0"
THR = "throughput/numpy-batch/hw1-q4/float32/b256/s0"
GONE = "throughput/numba-batch/hw1-q4/float32/b256/s0"


@pytest.mark.integration
def test_compare_fail_on_accuracy_prints_the_cells_and_why(tmp_path):
    """Sessions written into the store without training: A, B (accuracy down 2 points, a cell
    of A gone) and C (as A but for the cell gone)."""
    uri = sqlite_uri(tmp_path)
    a = fake_session(uri, "quick", cells={ACC: (0.87, 1e5), THR: (None, 3e5), GONE: (None, 4e5)})
    b = fake_session(uri, "quick", cells={ACC: (0.85, 1e5), THR: (None, 3e5)})
    c = fake_session(uri, "quick", cells={ACC: (0.87, 1e5), THR: (None, 3e5)})
    out = ["--tracking-uri", uri, "--output-dir", str(tmp_path / "out")]
    worse = run_cli("compare", a, b, "--fail-on", "accuracy", *out)
    assert worse.returncode == 1, worse.stderr
    header = next(line for line in worse.stdout.splitlines() if line.startswith("cell "))
    assert "test acc A" in header and "test acc B" in header and "acc/parity" in header
    assert (f"exit 1 (--fail-on accuracy): 1 cell(s)\n  {ACC}: test accuracy 0.8700 -> 0.8500 (-0.0200, "
            "tolerance 0.005)") in worse.stdout
    assert f"only in A (1, a failure with --fail-on-missing): {GONE}" in worse.stdout
    same = run_cli("compare", a, c, "--fail-on", "accuracy", *out)       # a missing cell is listed, not failed
    assert same.returncode == 0 and "exit 0 (--fail-on accuracy): no cell fails" in same.stdout, same.stdout
    missing = run_cli("compare", a, c, "--fail-on", "accuracy", "--fail-on-missing", *out)
    assert missing.returncode == 1
    assert f"  {GONE}: in A, missing from B (--fail-on-missing)" in missing.stdout


@pytest.mark.timing
@pytest.mark.integration
def test_live_compare_flags_a_3x_slowdown_and_rarely_anything_else(two_sessions):
    """Live timing (``pytest -m timing``): a third session with numpy-batch slowed 3x."""
    uri, folder = two_sessions
    clean = run_cli("compare", "latest~1", "latest", "--tracking-uri", uri, "--output-dir", str(folder / "out"))
    flagged = [line for line in clean.stdout.splitlines() if line.startswith(("throughput/", "accuracy/"))
               and (" slower " in line or " faster " in line)]
    print(f"clean vs clean: {len(flagged)} of 7 cells flagged")
    proc = run_cli("bench", "--dry-run", "--impl", "numpy-sample,numpy-batch", "--threads", "1", "--tracking-uri", uri,
                   "--output-dir", str(folder / "out"), env={"CI": "1", "BPB_FAULT": "tests.faults:slow_numpy_batch_3x"})
    assert proc.returncode == 0
    slow = run_cli("compare", "latest~1", "latest", "--tracking-uri", uri, "--fail-on", "slower")
    assert slow.returncode == 1
    slower = {line.split()[0] for line in slow.stdout.splitlines() if " slower " in line}
    assert {c for c in slower if "numpy-batch" in c} and all("numpy-batch" in c for c in slower), slow.stdout
