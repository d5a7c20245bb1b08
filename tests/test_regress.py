"""The regression gate: passes on this tree, fails (naming the cell) on every kind of
regression, updates its baseline idempotently, and its speed gate tells noise from a slowdown."""
import json
import re
import shutil
from pathlib import Path

import pytest

import impls
import tracking
from benchmarks import regress
from benchmarks.regress import GateOptions, run_gate
from tests.conftest import run_cli

COMMITTED = Path(regress.BASELINE)
CPU_IMPLS = [n for n, why in impls.available().items() if why is None and not impls.get(n).needs_gpu]


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    """One full gate session of this tree against the committed baseline, speed at warn."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('gate') / 'mlflow.db'}"
    proc = run_cli("regress", "--speed", "warn", "--tracking-uri", uri, env={"CI": "1"})
    return uri, proc, tracking.latest_session(uri)


def verdict_rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()
            if re.match(r"^(speed/)?hw1-q[34]/", line)]


def test_gate_passes_on_this_tree_and_prints_its_table(gate):
    uri, proc, run_id = gate
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"^cell\s+check\s+expected\s+measured\s+delta\s+verdict", proc.stdout, re.M)
    rows = verdict_rows(proc.stdout)
    for name in CPU_IMPLS:
        assert any(f"/{name}/" in r[0] and r[1] == "accuracy" for r in rows if name != "numpy-sample" or True)
        assert any(f"/{name}/" in r[0] and r[1] == "parity" for r in rows)
    assert all(r[-1] in ("ok", "faster", "SLOWER (warn)") for r in rows), rows
    assert "± " in proc.stdout and "(3 seeds)" in proc.stdout
    m = re.search(r"regress: (\d+) of (\d+) checks pass", proc.stdout)
    assert m and m.group(1) == m.group(2)
    # the verdicts are on the session's MLflow run too
    import mlflow
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run_id).data.tags["regress.result"] in ("pass", "warn")
    logged = json.loads(Path(client.download_artifacts(run_id, "regress/verdicts.json")).read_text())
    assert len(logged["verdicts"]) == len(rows)


def test_update_keeps_an_unchanged_tree_unchanged_and_then_passes(gate, tmp_path):
    uri, _, run_id = gate
    baseline = tmp_path / "baseline.json"
    shutil.copy(COMMITTED, baseline)
    proc = run_cli("regress", "--update", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    new, old = json.loads(baseline.read_text()), json.loads(COMMITTED.read_text())
    if new != old:
        # Only a speed entry may move, and only where this machine measured a significant
        # shift beyond its band (the update keeps everything inside tolerance or band).
        verdicts = json.loads(Path(__import__("mlflow").MlflowClient(uri).download_artifacts(
            run_id, "regress/verdicts.json")).read_text())["verdicts"]
        moved = {k for k in set(new["cells"]) | set(old["cells"]) if new["cells"].get(k) != old["cells"].get(k)}
        for key in moved:
            assert key.startswith("speed/"), f"--update on an unchanged tree changed {key}"
            assert {k: v for k, v in new["cells"][key].items() if k != "speed"} == \
                   {k: v for k, v in old["cells"][key].items() if k != "speed"}
            speed = [v for v in verdicts if v["cell"] == key and v["check"] == "speed"]
            assert speed and speed[0]["verdict"] != "ok", f"{key} moved although its speed was within band"
    else:
        assert baseline.read_text() == COMMITTED.read_text()
    proc = run_cli("regress", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_update_writes_sorted_rounded_keys_from_scratch(gate, tmp_path):
    uri, _, run_id = gate
    baseline = tmp_path / "new.json"
    texts = []
    for _ in range(2):   # twice from the same session: byte-identical
        proc = run_cli("regress", "--update", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
        assert proc.returncode == 0, proc.stdout[-3000:]
        texts.append(baseline.read_text())
    first = texts[0]
    assert texts[1] == first
    data = json.loads(first)
    assert list(data["cells"]) == sorted(data["cells"])
    for entry in data["cells"].values():
        acc = entry.get("accuracy")
        if acc:
            assert round(acc["expected"], 4) == acc["expected"] and acc["seeds"] == [0, 1, 2]


def test_baseline_that_expects_more_than_the_code_delivers_fails(gate, tmp_path):
    uri, _, run_id = gate
    data = json.loads(COMMITTED.read_text())
    acc_key = "hw1-q3/fashion-mnist/numpy-batch/float32/b256"
    speed_key = "speed/hw1-q4/fashion-mnist/numba-sample/float32/b1"
    data["cells"][acc_key]["accuracy"]["expected"] += 0.05
    s = data["cells"][speed_key]["speed"]
    s["ratio"], s["band"], s["samples"] = s["ratio"] * 3, [b * 3 for b in s["band"]], [v * 3 for v in s["samples"]]
    baseline = tmp_path / "greedy.json"
    baseline.write_text(json.dumps(data))
    proc = run_cli("regress", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri,
                   "--speed", "fail")
    assert proc.returncode == 1
    failed = {(r[0], r[1]) for r in verdict_rows(proc.stdout) if r[-1] == "FAIL"}
    assert {(acc_key, "accuracy"), (speed_key, "speed")} <= failed
    # nothing else fails but, on a noisy machine, another cell's speed
    assert all(check == "speed" for _, check in failed - {(acc_key, "accuracy")})
    assert f"FAILED accuracy of {acc_key}" in proc.stdout


def test_accuracy_drop_fails_the_gate_naming_the_cell(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = GateOptions(impls=("numpy-batch",), checks=("accuracy", "parity"))
    rc = run_gate(options, COMMITTED, uri=uri, worker_setup="tests.faults:lr_schedule_bug_numpy_batch",
                  out_dir=str(tmp_path / "r"), log=print)
    out = capsys.readouterr().out
    assert rc == 1
    rows = verdict_rows(out)
    failed = {(r[0], r[1]) for r in rows if r[-1] == "FAIL"}
    # per-sample SGD loses 19 points; Adam at batch 256 (hw1-q3) absorbs much of a smaller lr
    assert ("hw1-q4/fashion-mnist/numpy-batch/float64/b1", "accuracy") in failed
    assert all(check == "accuracy" and "/numpy-batch/" in cell for cell, check in failed)
    assert all(r[-1] == "ok" for r in rows if r[1] == "parity")        # one step is still right


def test_float32_parity_break_fails_the_gate(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = GateOptions(impls=("numba-batch",), checks=("parity",))
    rc = run_gate(options, COMMITTED, uri=uri, worker_setup="tests.faults:float32_bug_numba_batch",
                  out_dir=str(tmp_path / "r"), log=print)
    out = capsys.readouterr().out
    assert rc == 1
    parity = {r[0]: r[-1] for r in verdict_rows(out) if r[1] == "parity"}
    assert parity == {"hw1-q3/fashion-mnist/numba-batch/float32/b256": "FAIL",
                      "hw1-q4/fashion-mnist/numba-batch/float64/b1": "ok",
                      "speed/hw1-q4/fashion-mnist/numba-batch/float32/b256": "FAIL"}


def test_speed_gate_catches_a_3x_slowdown_and_not_noise(tmp_path, capsys):
    """A baseline from one clean run; identical runs must not fail; a 3x slowdown must."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    baseline = tmp_path / "speed.json"
    options = GateOptions(impls=("numpy-sample", "numpy-batch"), checks=("speed",))
    assert run_gate(options, baseline, "fail", update=True, uri=uri, out_dir=str(tmp_path / "r")) == 0
    clean = [run_gate(options, baseline, "fail", uri=uri, out_dir=str(tmp_path / "r")) for _ in range(3)]
    slow = run_gate(options, baseline, "fail", uri=uri, worker_setup="tests.faults:slow_numpy_batch_3x",
                    out_dir=str(tmp_path / "r"))
    out = capsys.readouterr().out
    assert clean == [0, 0, 0], out[-3000:]
    assert slow == 1
    last = out[out.rindex("cell  "):]
    assert re.search(r"speed/hw1-q4/fashion-mnist/numpy-batch/float32/b256\s+speed\s.*FAIL", last)
