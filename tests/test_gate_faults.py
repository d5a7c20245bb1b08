"""The regression gate catches a broken implementation: one gate session of two implementations,
each broken its own way (tests/faults.py), fails the checks that can see each fault and no other."""
from pathlib import Path

import pytest

import tracking
from benchmarks import baseline as baseline_file
from benchmarks.gate import GateOptions, run_gate
from tests.helpers import brief_probes, verdict_rows

pytestmark = pytest.mark.integration      # a real gate session, its workers spawned

COMMITTED = Path(baseline_file.BASELINE)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """One gate session (in this process, accuracy and parity checks) of two implementations,
    each broken its own way (tests/faults.py): numpy-batch's learning rate drops after its first
    step, numba-batch's float32 update is 1% too large. Its probes are a dry run's: nothing here
    reads a peak. (exit status, what it printed)."""
    import contextlib
    import io
    folder = tmp_path_factory.mktemp("broken")
    options = GateOptions(impls=("numpy-batch", "numba-batch"), checks=("accuracy", "parity"))
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        brief_probes(mp)
        mp.setenv("BPB_FAULT", "tests.faults:lr_schedule_bug_numpy_batch_and_float32_bug_numba_batch")
        rc = run_gate(options, COMMITTED, store=tracking.connect(f"sqlite:///{folder / 'mlflow.db'}"),
                      out_dir=str(folder / "r"), log=print, threads=1)
    return rc, out.getvalue()


def test_accuracy_drop_fails_the_gate_naming_the_cell(broken):
    rc, out = broken
    assert rc == 1
    rows = [r for r in verdict_rows(out) if "/numpy-batch/" in r[0]]
    failed = {(r[0], r[1]) for r in rows if r[-1] == "FAIL"}
    # per-sample SGD loses 19 points; Adam at batch 256 (hw1-q3) absorbs most of a smaller lr in
    # its final accuracy, but not in its training-loss curve
    assert ("hw1-q4/fashion-mnist/numpy-batch/float64/b1", "accuracy") in failed
    assert ("hw1-q4/fashion-mnist/numpy-batch/float64/b1", "loss") in failed
    assert ("hw1-q3/fashion-mnist/numpy-batch/float32/b256", "loss") in failed
    assert all(check in ("accuracy", "loss") for _, check in failed)
    assert all(r[-1] == "ok" for r in rows if r[1] == "parity")        # one step is still right
    assert "FAILED accuracy of hw1-q4/fashion-mnist/numpy-batch/float64/b1" in out


def test_float32_parity_break_fails_the_gate(broken):
    rc, out = broken
    assert rc == 1
    parity = {r[0]: r[-1] for r in verdict_rows(out) if r[1] == "parity" and "/numba-batch/" in r[0]}
    assert parity == {"hw1-q3/fashion-mnist/numba-batch/float32/b256": "FAIL",
                      "hw1-q4/fashion-mnist/numba-batch/float64/b1": "ok",
                      "speed/hw1-q4/fashion-mnist/numba-batch/float32/b256": "FAIL"}
    # float64 is untouched: its accuracy and loss pass
    assert all(r[-1] == "ok" for r in verdict_rows(out) if r[0] == "hw1-q4/fashion-mnist/numba-batch/float64/b1")
