"""The regression gate's logic on recorded and synthetic samples: nothing is timed here.

Speed: the significance test and the band together (benchmarks/regress.py, judge_speed), on
repeat distributions with a known 3x shift, no shift, a shift inside the band, and a speed-up
beyond it. Update: ``--update``'s one rule (``left_band``), the baseline's schema, and the
atomic write. And the gate refuses to judge a session run with another schedule or seeds.
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks import baseline as baseline_file, regress
from benchmarks.config import UsageError
from benchmarks.gate import matrix_differences
from benchmarks.plan import gate_options
from benchmarks.regress import Measured, judge
from benchmarks.update_rule import updated_baseline

COMMITTED = Path(baseline_file.BASELINE)
SPEED_KEY = "speed/hw1-q4/fashion-mnist/numba-sample/float32/b1"
ACC_KEY = "hw1-q4/fashion-mnist/numpy-batch/float64/b1"


def recorded() -> dict:
    """The committed baseline: real repeat distributions measured by the gate."""
    return json.loads(COMMITTED.read_text())


def speed(ratios, key=SPEED_KEY) -> Measured:
    return Measured(key, "speed", key.split("/")[-3], "float32", parity=[1e-7], ratios=list(ratios))


def noisy(center: float, n: int = 7, spread: float = 0.08, seed: int = 0) -> list[float]:
    """``n`` ratios around ``center`` with lognormal noise of ``spread`` (a noisy shared machine)."""
    return list(center * np.exp(np.random.default_rng(seed).normal(0, spread, n)))


def entry_from(ratios, band=regress.MIN_BAND) -> dict:
    med = float(np.median(ratios))
    return {"ratio": med, "band": [med * (1 - band), med * (1 + band)], "samples": sorted(ratios)}


def verdict_of(measured: Measured, entry: dict, mode="fail"):
    return regress.judge_speed(measured.key, entry, measured, mode)


@pytest.mark.parametrize("seed", range(5))
def test_a_3x_slowdown_is_flagged_and_leaves_its_band(seed):
    base = noisy(10.0, seed=seed)
    v = verdict_of(speed(noisy(10.0 / 3, seed=seed + 100)), entry_from(base))
    assert (v.verdict, v.failing, v.left_band) == ("FAIL", True, True)
    v = verdict_of(speed(noisy(10.0 / 3, seed=seed + 100)), entry_from(base), mode="warn")
    assert (v.verdict, v.failing, v.left_band) == ("SLOWER (warn)", False, True)


@pytest.mark.parametrize("seed", range(5))
def test_no_shift_is_ok(seed):
    v = verdict_of(speed(noisy(10.0, seed=seed + 100)), entry_from(noisy(10.0, seed=seed)))
    assert (v.verdict, v.failing, v.left_band) == ("ok", False, False)


def test_a_significant_shift_inside_the_band_is_ok():
    """30% slower, with no overlap at all (p tiny), is still inside a +-50% band: noise on a
    shared machine, not a regression."""
    base, slower = noisy(10.0, spread=0.01), noisy(7.0, spread=0.01, seed=1)
    p_slower, _ = regress.shift_pvalues(slower, base)
    assert p_slower < regress.ALPHA
    v = verdict_of(speed(slower), entry_from(base))
    assert (v.verdict, v.failing, v.left_band) == ("ok", False, False)


def test_below_the_band_without_significance_is_ok():
    """A median below the band, from repeats so scattered that they overlap the baseline's:
    not significant (p about 0.28), so not a regression."""
    base = [8.0, 9.0, 10.0, 10.0, 11.0, 12.0, 30.0]
    entry = {"ratio": 10.0, "band": [5.5, 15.0], "samples": base}
    scattered = [1.0, 2.0, 3.0, 5.0, 20.0, 30.0, 40.0]
    assert np.median(scattered) < entry["band"][0]
    v = verdict_of(speed(scattered), entry)
    assert v.verdict == "ok" and not v.left_band


def test_a_speed_up_beyond_the_band_is_reported_not_failed():
    v = verdict_of(speed(noisy(30.0, seed=3)), entry_from(noisy(10.0)))
    assert (v.verdict, v.failing, v.left_band) == ("faster", False, True)


def test_recorded_samples_judge_against_themselves_ok_and_a_third_of_them_fail():
    e = recorded()["cells"][SPEED_KEY]["speed"]
    assert verdict_of(speed(e["samples"]), e).verdict == "ok"
    assert verdict_of(speed([r / 3 for r in e["samples"]]), e).verdict == "FAIL"


def test_too_few_samples_never_pass_in_fail_mode():
    e = recorded()["cells"][SPEED_KEY]["speed"]
    assert verdict_of(speed(e["samples"][:2]), e).failing
    assert not verdict_of(speed(e["samples"][:2]), e, mode="warn").failing


@pytest.mark.parametrize("samples, why", [
    ([10.0] * 3, "the baseline has 3 sample(s), fewer than 5"),
    ([10.0, 10.5, 11.0, 11.5], "the baseline has 4 sample(s), fewer than 5"),
    ([10.0] * 7, "the baseline's 7 samples are all equal"),
])
def test_a_baseline_whose_samples_carry_no_information_gives_no_verdict(samples, why):
    """Three equal samples never let p fall below 0.011 (> ALPHA): a 50x slowdown would pass.
    Without information the check says so, and under --speed fail it fails."""
    entry = {"ratio": 10.0, "band": [5.0, 15.0], "samples": samples}
    slow = speed(noisy(10.0 / 50))
    v = verdict_of(slow, entry)
    assert (v.verdict, v.failing, v.measured) == ("FAIL", True, f"no verdict: {why}")
    v = verdict_of(slow, entry, mode="warn")
    assert (v.verdict, v.failing, v.left_band) == ("no verdict", False, True)     # --update replaces it


def test_measured_samples_that_are_all_equal_give_no_verdict_and_are_never_written():
    old = recorded()
    v = verdict_of(speed([5.0] * 7), old["cells"][SPEED_KEY]["speed"])
    assert (v.verdict, v.measured, v.left_band) == ("FAIL", "no verdict: the session's 7 samples are all equal", False)
    _, new, moved = update({"cells": {}}, {SPEED_KEY: speed([5.0] * 7)})
    assert "speed" not in new["cells"][SPEED_KEY]
    _, new, _ = update({"cells": {}}, {SPEED_KEY: speed([5.0001, 5.0002, 5.0003, 5.0004, 5.0005])})
    assert len(set(new["cells"][SPEED_KEY]["speed"]["samples"])) == 5       # more digits where 3 tie


# ---- --update's rule -----------------------------------------------------------------------
def accuracy(mean: float, seeds=(0, 1, 2), key=ACC_KEY, loss_shift: float = 0.0) -> Measured:
    """Three seeds around ``mean``, with the recorded training-loss curve (shifted by ``loss_shift``)."""
    accs = [mean - 0.001, mean, mean + 0.001]
    curve = [x + loss_shift for x in recorded()["cells"].get(key, {}).get("loss", {}).get("expected", [1.0, 0.5])]
    return Measured(key, "accuracy", key.split("/")[-3], "float64", seeds=list(seeds), accuracies=accs,
                    times_to_target=[None] * 3, parity=[1e-15], curves=[curve] * 3)


def update(old: dict, measured: dict[str, Measured]):
    verdicts = judge(measured, old, "warn")
    new, moved = updated_baseline(old, measured, verdicts, regress.MIN_BAND, old.get("options", {}))
    return verdicts, new, moved


def test_update_moves_exactly_the_entries_whose_verdict_left_their_band():
    old = recorded()
    acc_expected = old["cells"][ACC_KEY]["accuracy"]["expected"]
    e = old["cells"][SPEED_KEY]["speed"]
    measured = {
        ACC_KEY: accuracy(acc_expected + 0.002),                          # inside tolerance: kept
        SPEED_KEY: speed([r / 3 for r in e["samples"]]),                   # left its band: moves
        "hw1-q4/fashion-mnist/numba-sample/float64/b1": accuracy(0.5, key="hw1-q4/fashion-mnist/numba-sample/"
                                                                            "float64/b1"),  # FAIL: moves
    }
    verdicts, new, moved = update(old, measured)
    assert sorted(moved) == sorted({v.cell for v in verdicts if v.left_band})
    assert sorted(moved) == sorted([SPEED_KEY, "hw1-q4/fashion-mnist/numba-sample/float64/b1"])
    assert new["cells"][ACC_KEY] == old["cells"][ACC_KEY]
    assert new["cells"][SPEED_KEY]["speed"]["ratio"] == pytest.approx(e["ratio"] / 3, rel=0.05)
    for key in set(old["cells"]) - set(moved):
        assert new["cells"][key] == old["cells"][key]                     # untouched, nothing dropped


def test_update_of_an_unchanged_measurement_is_byte_identical():
    old = recorded()
    e = old["cells"][SPEED_KEY]["speed"]
    acc = old["cells"][ACC_KEY]["accuracy"]
    _, new, moved = update(old, {SPEED_KEY: speed(e["samples"]), ACC_KEY: accuracy(acc["expected"])})
    assert moved == [] and baseline_file.dump(new) == baseline_file.dump(old)


def test_new_cells_are_added_and_a_better_accuracy_moves():
    old = {"cells": {ACC_KEY: {"accuracy": {"expected": 0.70, "tolerance": 0.01, "seeds": [0, 1, 2]},
                               "parity": {"bound": 1e-9}}}}
    verdicts, new, moved = update(old, {ACC_KEY: accuracy(0.75), SPEED_KEY: speed(noisy(10.0))})
    assert {v.cell: v.verdict for v in verdicts if v.check in ("accuracy", "all")} == {ACC_KEY: "better",
                                                                                       SPEED_KEY: "new"}
    assert sorted(moved) == sorted([ACC_KEY, SPEED_KEY])
    assert new["cells"][ACC_KEY]["accuracy"]["expected"] == 0.75
    assert set(new["cells"][SPEED_KEY]) == {"parity", "speed"}


def test_a_training_loss_curve_above_its_tolerance_fails_and_moves():
    old = recorded()
    e = old["cells"][ACC_KEY]
    verdicts, new, moved = update(old, {ACC_KEY: accuracy(e["accuracy"]["expected"], loss_shift=0.5)})
    loss = [v for v in verdicts if v.check == "loss"]
    assert [(v.verdict, v.failing, v.left_band) for v in loss] == [("FAIL", True, True)]
    assert moved == [ACC_KEY] and new["cells"][ACC_KEY]["accuracy"] == e["accuracy"]
    assert new["cells"][ACC_KEY]["loss"]["expected"] == [round(x + 0.5, 4) for x in e["loss"]["expected"]]
    within = judge({ACC_KEY: accuracy(e["accuracy"]["expected"], loss_shift=-0.001)}, old, "warn")
    assert [v.verdict for v in within if v.check == "loss"] == ["ok"]


def test_a_baseline_entry_that_was_not_measured_is_missing_and_fails():
    old = recorded()
    verdicts = judge({}, old, "warn")
    assert verdicts and all(v.verdict == "missing" and v.failing for v in verdicts)


# ---- the baseline file -----------------------------------------------------------------------
@pytest.mark.parametrize("text, needle", [
    ("[]", '"cells" object'),
    ("{}", '"cells" object'),
    ('{"cells": {"k": {"accuracy": {"expected": "high"}}}}', "accuracy needs"),
    ('{"cells": {"k": {"speed": {"ratio": 2, "band": [1], "samples": [1, 2, 3]}}}}', "speed needs"),
    ('{"cells": {"k": {"parity": {}}}}', "parity needs"),
    ('{"cells": {"k": {}}}', "expected some of"),
    ("{not json", "not valid JSON"),
    ('{"cells": {"k": {"parity": {"bound": NaN}}}}', "NaN is not a number"),
    ('{"cells": {"k": {"parity": {"bound": -1e-9}}}}', r"parity bound is -1e-09, not a number in \(0, 0.1\]"),
    ('{"cells": {"k": {"parity": {"bound": 1e-9, "bnd": 1}}}}', "parity needs bound"),
    ('{"cells": {}, "cells": {}}', "appears twice"),
    ('{"cells": {"k": {"accuracy": {"expected": 0.8, "tolerance": 0.01, "seeds": [1e3]}}}}', "seeds must be"),
])
def test_a_malformed_baseline_is_a_usage_error(tmp_path, text, needle):
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=needle):
        baseline_file.load_baseline(path)


def test_a_missing_baseline_is_an_error_unless_update_creates_it(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        baseline_file.load_baseline(tmp_path / "none.json")
    assert baseline_file.load_baseline(tmp_path / "none.json", missing_ok=True) == {"cells": {}}
    assert baseline_file.schema_problem(recorded()) is None


def test_the_baseline_is_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "baseline.json"
    path.write_text("old contents\n")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        baseline_file.write_atomically(path, "new contents\n")
    assert path.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]      # no temporary left behind
    monkeypatch.undo()
    baseline_file.write_atomically(path, "new contents\n")
    assert path.read_text() == "new contents\n"


def test_the_gate_refuses_a_session_run_with_another_schedule_or_seeds():
    matrix = gate_options()
    same = {"params.option.schedule": ",".join(map(str, matrix.schedule)), "params.option.seeds": "0,1,2",
            "params.option.dataset": "fashion-mnist"}
    assert matrix_differences(same, matrix) == []
    other = {**same, "params.option.seeds": "0", "params.option.schedule": "('hw1-q4', 3, None)"}
    differ = matrix_differences(other, matrix)
    assert len(differ) == 2 and "seeds is '0', the gate's '0,1,2'" in differ



def test_a_calibrated_cut_judges_the_speed_check_alone_and_an_update_records_the_machine():
    """With a noise profile's cut (``calibrate --gate``), a 20% slowdown inside the ±50% band
    is flagged when the machine's noise allows 10%, and not when it allows only 30%; the
    expected column names the cut and what it detects. ``--update`` writes the machine label
    into the speed entries it moves, so a profile judges only entries measured where it was."""
    entry = entry_from(noisy(10.0, seed=3))
    slower = speed(noisy(8.0, seed=4))
    assert verdict_of(slower, entry).verdict == "ok"                      # inside the band
    v = regress.judge_speed(SPEED_KEY, entry, slower, "fail", (math.log(1.10), 0.14))
    assert (v.verdict, v.failing, v.left_band) == ("FAIL", True, True)
    assert "calibrated (detects ≥ 14%)" in v.expected and "×/÷1.1" in v.expected
    assert regress.judge_speed(SPEED_KEY, entry, slower, "fail", (math.log(1.30), 0.45)).verdict == "ok"
    faster = regress.judge_speed(SPEED_KEY, entry, speed(noisy(12.5, seed=5)), "fail", (math.log(1.10), 0.14))
    assert (faster.verdict, faster.failing) == ("faster", False)
    verdicts = judge({SPEED_KEY: slower}, {"cells": {SPEED_KEY: {"speed": entry}}}, "fail",
                     cuts={SPEED_KEY: (math.log(1.10), 0.14)})
    new, moved = updated_baseline({"cells": {SPEED_KEY: {"speed": entry}}}, {SPEED_KEY: slower}, verdicts,
                                  regress.MIN_BAND, {}, "lab-a")
    assert moved == [SPEED_KEY] and new["cells"][SPEED_KEY]["speed"]["machine"] == "lab-a"
    assert baseline_file.schema_problem(new) is None
