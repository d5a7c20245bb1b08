"""The regression gate, live: passes on this tree, fails (naming the cell) on every kind of
regression it can see in accuracy and parity, and updates its baseline by its one rule.

Nothing here asserts on a wall-clock measurement except the test marked ``timing`` (not in the
default tier): the speed gate's logic is tested on recorded and synthetic samples in
tests/test_speed_gate.py."""
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest

import impls
import mlflow
import tracking
from benchmarks import baseline as baseline_file
from benchmarks.gate import GateOptions, run_gate
from tests.helpers import fake_profile, fill, popen_cli, run_cli, verdict_rows

pytestmark = pytest.mark.integration      # every test here starts real processes

COMMITTED = Path(baseline_file.BASELINE)
# the gate's implementations: every CPU one but the peers and the opt-in ones (benchmarks/plan.py)
CPU_IMPLS = [n for n, why in impls.available().items()
             if why is None and not impls.get(n).needs_gpu and not impls.is_peer(n) and n not in impls.OPT_IN]


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    """One full gate session of this tree against the committed baseline, speed at warn, on one
    thread: it shares two cores with the other pytest worker, and spares two of its four peak
    probes. The thread choice is tested by every other session; numba-batch's two-thread split, in
    tests/test_conformance.py."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('gate') / 'mlflow.db'}"
    proc = run_cli("regress", "--speed", "warn", "--threads", "1", "--tracking-uri", uri, env={"CI": "1"})
    return uri, proc, tracking.latest_session(tracking.connect(uri), mode="regress")


def test_gate_passes_on_this_tree_and_prints_its_table(gate):
    uri, proc, run_id = gate
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"^cell\s+check\s+expected\s+measured\s+delta\s+verdict", proc.stdout, re.M)
    rows = verdict_rows(proc.stdout)
    for name in CPU_IMPLS:
        assert any(f"/{name}/" in r[0] and r[1] == "accuracy" for r in rows)
        assert any(f"/{name}/" in r[0] and r[1] == "parity" for r in rows)
    assert all(r[-1] in ("ok", "better", "faster", "SLOWER (warn)") for r in rows), rows
    assert "± " in proc.stdout and "(3 seeds)" in proc.stdout
    m = re.search(r"regress: (\d+) of (\d+) checks pass", proc.stdout)
    assert m and m.group(1) == m.group(2)
    # the verdicts are on the session's MLflow run too
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run_id).data.tags["regress.result"] in ("pass", "warn")
    logged = json.loads(Path(client.download_artifacts(run_id, "regress/verdicts.json")).read_text())
    assert len(logged["verdicts"]) == len(rows)


def test_update_moves_only_entries_that_left_their_band_and_then_passes(gate, tmp_path):
    """--update's rule (benchmarks/regress.py): an entry moves only when its own verdict,
    judged against the old entry, left its band; on an unchanged tree that is usually none,
    and then the file stays byte-identical. Whatever moved, the gate passes afterwards."""
    uri, _, run_id = gate
    baseline = tmp_path / "baseline.json"
    shutil.copy(COMMITTED, baseline)
    proc = run_cli("regress", "--update", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    new, old = json.loads(baseline.read_text()), json.loads(COMMITTED.read_text())
    logged = json.loads(Path(mlflow.MlflowClient(uri).download_artifacts(
        run_id, "regress/verdicts.json", str(tmp_path))).read_text())
    assert logged["updated"] is True
    left = {v["cell"] for v in logged["verdicts_before_update"] if v["left_band"]}
    changed = {k for k in set(new["cells"]) | set(old["cells"]) if new["cells"].get(k) != old["cells"].get(k)}
    assert changed == left == set(logged["moved"])
    assert set(old["cells"]) <= set(new["cells"])                          # nothing dropped
    if not changed:
        assert baseline.read_text() == COMMITTED.read_text()
    proc = run_cli("regress", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_a_noise_profile_of_the_machine_judges_the_speed_checks_measured_there(gate, tmp_path):
    """``regress`` reads the latest gate profile (``calibrate --gate``) of the session's machine.
    Without one its first line says uncalibrated and how to calibrate. With one, the committed
    baseline's speed entries, which name no machine, keep their band, and the line says why;
    ``--update`` from scratch records the machine in every speed entry it writes, and then each
    speed check is judged by its calibrated cut, shown with what it detects."""
    uri, proc, run_id = gate
    assert "uncalibrated: no noise profile of " in proc.stdout and "`python -m benchmarks calibrate --gate`" in proc.stdout
    store = tracking.connect(uri)
    parent, raw_cells, raw_epochs = tracking.read_session(store, run_id)
    cells, _ = tracking.tidy(raw_cells, raw_epochs)
    label = parent["tags.bpb.machine"]
    throughput = cells.loc[cells["kind"] == "throughput", "cell"].tolist()
    profile = fake_profile(uri, label, "regress", dict.fromkeys(throughput, math.log(1.5)), parent["tags.git_commit"],
                           tmp_path)
    proc = run_cli("regress", "--run-id", run_id, "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert (f"calibrated: {len(throughput)} cells profiled, calibration run {profile[:8]} (5 regress sessions on "
            f"{label}") in proc.stdout
    assert ("0 speed checks judged by their calibrated cut, the others by their band: their baseline was measured "
            "on an unrecorded machine") in proc.stdout
    baseline = tmp_path / "baseline.json"
    proc = run_cli("regress", "--update", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    speed = {k: e["speed"] for k, e in json.loads(baseline.read_text())["cells"].items() if "speed" in e}
    assert speed and {e["machine"] for e in speed.values()} == {label}
    proc = run_cli("regress", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert f"; {len(speed)} speed checks judged by their calibrated cut" in proc.stdout
    rows = [r for r in verdict_rows(proc.stdout) if r[1] == "speed"]
    assert len(rows) == len(speed) and all("×/÷1.5 calibrated (detects ≥ 125%)" in r[2] and r[-1] == "ok"
                                           for r in rows), rows


def test_a_run_that_is_not_a_gate_session_is_refused(gate):
    uri, _, run_id = gate
    child = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1)[0].info.run_id
    for bad in (child, "x' OR 1=1", "0" * 32):
        proc = run_cli("regress", "--run-id", bad, "--tracking-uri", uri)
        assert proc.returncode == 2, (bad, proc.stdout[-2000:], proc.stderr)
        assert "Traceback" not in proc.stderr and "checks pass" not in proc.stdout


def test_update_on_a_full_disk_leaves_the_old_baseline_byte_identical(gate, tmp_path, full_disk):
    uri, _, run_id = gate
    data = json.loads(COMMITTED.read_text())
    for entry in data["cells"].values():
        entry.pop("loss", None)                      # so that the update has something to write
    baseline = full_disk / "baseline.json"
    baseline.write_text(json.dumps(data))
    before = baseline.read_bytes()
    fill(full_disk)
    proc = run_cli("regress", "--update", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    assert baseline.read_bytes() == before
    assert sorted(p.name for p in full_disk.iterdir()) == ["baseline.json", "baseline.json.lock", "filler"]


def test_a_malformed_baseline_is_refused_through_the_cli(gate, tmp_path):
    uri, _, run_id = gate
    for text in ("[]", "{}", '{"cells": {"k": {"speed": {}}}}'):
        (tmp_path / "bad.json").write_text(text)
        proc = run_cli("regress", "--run-id", run_id, "--baseline", str(tmp_path / "bad.json"), "--tracking-uri", uri)
        assert proc.returncode == 2 and "not a baseline file" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("regress", "--run-id", run_id, "--baseline", str(tmp_path / "none.json"), "--tracking-uri", uri)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_two_updates_at_once_keep_both_entries_the_mode_the_owner_and_the_symlink(gate, tmp_path):
    """Two `regress --update` of two implementations started together on one baseline, each
    judging the session in its own store (a copy), as two machines sharing a baseline would:
    both implementations' entries are there afterwards. The file keeps its mode (and, as root,
    its owner), and the symlink to it stays a symlink."""
    uri, _, run_id = gate
    (tmp_path / "copy").mkdir()
    shutil.copy(uri[len("sqlite:///"):], tmp_path / "copy" / "mlflow.db")
    uris = {"numpy-batch": uri, "numba-batch": f"sqlite:///{tmp_path / 'copy' / 'mlflow.db'}"}
    data = json.loads(COMMITTED.read_text())
    mine = {k for k in data["cells"] if "/numpy-batch/" in k or "/numba-batch/" in k}
    assert mine
    for key in mine:
        del data["cells"][key]
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "baseline.json"
    real.write_text(json.dumps(data))
    os.chmod(real, 0o664)
    owner = (4321, 4322) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(real, *owner)
    link = tmp_path / "baseline.json"
    link.symlink_to(real)
    procs = [popen_cli("regress", "--update", "--run-id", run_id, "--baseline", str(link), "--tracking-uri", store,
                       "--impl", name) for name, store in uris.items()]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "rewritten" in out, out[-3000:] + err[-2000:]
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert set(json.loads(real.read_text())["cells"]) == set(json.loads(COMMITTED.read_text())["cells"])
    st = real.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o664, *owner)


def test_three_equal_speed_samples_give_no_verdict_and_fail_under_speed_fail(gate, tmp_path):
    """Three equal baseline samples never let p fall below ALPHA, so a 50x slowdown passed.
    Now the check says "no verdict", which --speed fail fails and --speed warn reports."""
    uri, _, run_id = gate
    data = json.loads(COMMITTED.read_text())
    key = "speed/hw1-q4/fashion-mnist/numba-sample/float32/b1"
    s = data["cells"][key]["speed"]
    s["ratio"], s["band"], s["samples"] = s["ratio"] * 50, [b * 50 for b in s["band"]], [s["ratio"] * 50] * 3
    baseline = tmp_path / "equal.json"
    baseline.write_text(json.dumps(data))
    proc = run_cli("regress", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri,
                   "--speed", "fail")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    row = [r for r in verdict_rows(proc.stdout) if r[0] == key and r[1] == "speed"]
    assert row and row[0][3] == "no verdict: the baseline has 3 sample(s), fewer than 5" and row[0][-1] == "FAIL"
    assert f"FAILED speed of {key}" in proc.stdout
    proc = run_cli("regress", "--run-id", run_id, "--baseline", str(baseline), "--tracking-uri", uri)
    row = [r for r in verdict_rows(proc.stdout) if r[0] == key and r[1] == "speed"]
    assert row and row[0][-1] == "no verdict", proc.stdout[-3000:]
    m = re.search(r"regress: (\d+) of (\d+) checks pass", proc.stdout)
    assert m and int(m.group(1)) < int(m.group(2)) and "1 speed check(s) without a verdict" in proc.stdout


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


@pytest.mark.timing
def test_live_speed_gate_catches_a_3x_slowdown_and_not_noise(tmp_path, capsys, monkeypatch):
    """Live wall-clock timing: for a quiet machine (``pytest -m timing``), never the default tier.
    A baseline from one clean run; identical runs must not fail; a 3x slowdown must."""
    store = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    baseline = tmp_path / "speed.json"
    options = GateOptions(impls=("numpy-sample", "numpy-batch"), checks=("speed",))
    assert run_gate(options, baseline, "fail", update=True, store=store, out_dir=str(tmp_path / "r")) == 0
    clean = [run_gate(options, baseline, "fail", store=store, out_dir=str(tmp_path / "r")) for _ in range(3)]
    monkeypatch.setenv("BPB_FAULT", "tests.faults:slow_numpy_batch_3x")
    slow = run_gate(options, baseline, "fail", store=store, out_dir=str(tmp_path / "r"))
    out = capsys.readouterr().out
    assert clean == [0, 0, 0], out[-3000:]
    assert slow == 1
    last = out[out.rindex("cell  "):]
    assert re.search(r"speed/hw1-q4/fashion-mnist/numpy-batch/float32/b256\s+speed\s.*FAIL", last)
