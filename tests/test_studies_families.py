"""``python -m studies families`` (studies/families.py): the interleaving order, the ratio
arithmetic and verdicts, a contender that is not there, the gemm-floor reference, and one tiny
real run through the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import impls
import tracking
from studies import families
from studies import yardsticks
from studies.families import (
    CONTESTS,
    Comparison,
    Contender,
    Contest,
    judge,
    rotation,
)
from reports.stats import round_ratios, session_spread
from tests.helpers import ROOT, sqlite_uri


def test_each_round_runs_every_contender_once_and_the_order_rotates():
    assert [rotation("AB", r) for r in range(4)] == [list("AB"), list("BA"), list("AB"), list("BA")]
    rounds = [rotation("ABC", r) for r in range(3)]
    assert rounds == [list("ABC"), list("BCA"), list("CAB")]
    for position in range(3):          # over len(contenders) rounds each one runs once in every position
        assert sorted(r[position] for r in rounds) == list("ABC")


def test_ratio_of_medians_and_the_median_and_range_of_per_round_ratios():
    fig = round_ratios([10.0, 20.0, 30.0, None], [20.0, 20.0, 20.0, 20.0])
    assert fig["rounds"] == 3                                      # the round without a numerator is left out
    assert fig["num_median"] == 20.0 and fig["den_median"] == 20.0 and fig["ratio_of_medians"] == 1.0
    assert fig["value"] == 1.0 and fig["min"] == 0.5 and fig["max"] == 1.5
    assert round_ratios([0.1, 0.3, 0.2], None)["value"] == pytest.approx(0.2)
    s = session_spread([90.0, 100.0, 110.0, 100.0, 100.0])
    assert s["median"] == 100.0 and s["value"] == pytest.approx(0.1)


def _res(v):
    return {"samples_per_second": v}


def test_verdicts_against_the_target():
    contest = Contest("x", "x", (Contender("a", "a"), Contender("b", "b")), (Comparison("a / b", "a", "b"),), 0.9)
    ok = judge(contest, {"a": [_res(95), _res(91)], "b": [_res(100), _res(100)]}, {})
    assert ok["verdict"] == "PASS" and ok["value"] == pytest.approx(0.93)
    miss = judge(contest, {"a": [_res(80), _res(85)], "b": [_res(100), _res(100)]}, {})
    assert miss["verdict"] == "MISS"
    floor = CONTESTS["floor"]
    results = {c.label: [_res(50)] for c in floor.contenders}
    results["torch-cpu"] = [_res(60)]
    results["gemm-floor"] = [_res(100)]
    best = judge(floor, results, {"jax-cpu": "not registered", "sklearn-mlp": "not registered"})
    assert best["verdict"] == "PASS" and best["value"] == 0.6   # the best family; the absent peers left out


def test_a_missing_contender_is_not_available_and_never_passes():
    contest = CONTESTS["numba-sample"]
    results = {c.label: [_res(100)] for c in contest.contenders}
    why = "cannot import studies.yardsticks.numba_sample_best"
    verdict = judge(contest, results, {"numba-sample-best float32": why, "numba-sample-best float64": why})
    assert verdict["verdict"] == "not available" and verdict["value"] is None
    assert all(why in row["why"] for row in verdict["comparisons"])
    floor = judge(CONTESTS["floor"], {c.label: [_res(100)] for c in CONTESTS["floor"].contenders},
                  {"gemm-floor": "its module is missing"})
    assert floor["verdict"] == "not available"                 # without its reference the floor has no verdict


def test_the_reference_table_names_the_four_and_gives_a_reason_for_an_absent_module(monkeypatch):
    assert yardsticks.names() == ["homework-loop", "torch-minimal", "numba-sample-best", "gemm-floor"]
    assert yardsticks.reason("gemm-floor") is None and yardsticks.missing("gemm-floor") is None
    monkeypatch.setitem(yardsticks._YARDSTICKS, "homework-loop", "studies.yardsticks.not_written_yet:HomeworkLoop")
    assert "cannot import studies.yardsticks.not_written_yet" in yardsticks.reason("homework-loop")
    with pytest.raises(KeyError, match="unknown yardstick"):
        yardsticks.get("nope")


def test_gemm_floor_runs_the_steps_gemms_and_leaves_its_parameters_untrained():
    spec = impls.NetSpec((784, 256, 128, 64, 10), "relu")
    params = impls.init_params(spec, 0, "he")
    net = yardsticks.get("gemm-floor")(spec, params, lr=1e-3, batch_size=256, dtype="float32", optimizer="adam")
    x = np.random.default_rng(0).random((600, 784), dtype=np.float32)
    assert net.train_epoch(x, np.zeros(600, np.int64), np.arange(600)) == 0.0     # 2 full batches and 88 rows
    for (W, b), (W0, b0) in zip(net.get_params(), params):
        assert W.dtype == np.float32 and np.array_equal(W, W0.astype(np.float32)) and not b.any()
    assert np.allclose(net.predict_proba(x[:4]).sum(axis=1), 1.0)
    assert net._g[0].shape == (784, 256) and np.isfinite(net._g[0]).all()


@pytest.mark.integration
def test_a_tiny_real_run_through_the_cli_writes_the_summary_and_logs_one_run_per_contest(tmp_path):
    uri = sqlite_uri(tmp_path)
    done = subprocess.run([sys.executable, "-m", "studies", "families", "--contest", "adam", "--contest",
                           "numpy-sample", "--rounds", "2", "--seconds", "0.05", "--output-dir", str(tmp_path),
                           "--tracking-uri", uri], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert done.stdout.count("adam r") == 2 and "Adam " in done.stdout
    summary = (tmp_path / "families" / "summary.md").read_text()
    assert "load average (1 min)" in summary and "2 rounds per contest" in summary
    assert "| adam | adam share |" in summary
    payload = json.loads((tmp_path / "families" / "summary.json").read_text())
    adam = payload["contests"]["adam"]
    assert [r["threads"] for r in adam["results"]["numpy-batch adam"]] == [families.CORES] * 2
    assert all(0 < r["adam_share"] < 1 and r["peak_rss_mb"] > 0 for r in adam["results"]["numpy-batch adam"])
    assert payload["contests"]["numpy-sample"]["verdict"]["verdict"] in ("PASS", "MISS")
    import mlflow
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name(tracking.EXPERIMENT).experiment_id],
        filter_string="tags.`bpb.kind` = 'families'")
    assert sorted(r.data.tags["bpb.families.contest"] for r in runs) == ["adam", "numpy-sample"]
    adam_run = next(r for r in runs if r.data.tags["bpb.families.contest"] == "adam")
    assert adam_run.data.tags["bpb.families.verdict"] in ("PASS", "MISS")
    assert {"numpy-batch_adam.samples_per_second_median", "numpy-batch_adam.peak_rss_mb",
            "adam_share.value"} <= set(adam_run.data.metrics)


@pytest.mark.integration                 # measures for seconds
@pytest.mark.parametrize("name, preset", [("homework-loop", "hw1-q4"), ("gemm-floor", "hw1-q3")])
def test_a_yardstick_is_prepared_by_the_runner_and_only_a_trainer_has_parity(name, preset):
    from studies import family_worker
    out = family_worker.measure({"name": name, "source": "ref", "preset": preset, "seconds": 0.02, "threads": 1,
                                 "dtype": "float32"})
    assert "error" not in out and "unavailable" not in out, out
    assert out["samples_per_second"] > 0
    if yardsticks.KINDS[name] == "trainer":
        assert 0 <= out["parity_max_error"] <= impls.PARITY_TOLERANCE["float32"]
    else:                                                   # the floor trains nothing: no parity to check
        assert np.isnan(out["parity_max_error"])


def test_the_jax_contests_time_every_minibatch_family_and_jax_on_one_thread_count():
    from studies.families import CORES
    for name, threads, target in (("jax", CORES, 1.0), ("jax-1", 1, 0.9)):
        contest = CONTESTS[name]
        assert {c.name for c in contest.contenders} == {"numpy-batch", "numba-batch", "torch-cpu", "torch-compile",
                                                        "jax-cpu"}
        assert {c.threads for c in contest.contenders} == {threads} and {c.preset for c in contest.contenders} == {"hw1-q3"}
        assert contest.rule == "best" and contest.target == target
        assert all(k.den == "jax-cpu" for k in contest.comparisons) and len(contest.comparisons) == 4
