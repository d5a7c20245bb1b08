"""The team pieces that need no server: the cross-machine report from a synthetic frame
(reports/across_machines.py), the machine label and the server's refusals at the command line."""
import numpy as np
import pandas as pd
import pytest

import impls
from reports.across_machines import accuracy_verdicts, machines_figure, machines_table, write_machines_report
from tests.helpers import run_cli

TOL = dict(impls.PARITY_TOLERANCE)


def cell(machine, name, impl, kind, dtype, rate, acc=np.nan, status="FINISHED", peak=100.0):
    return {"run_id": f"{machine}-{name}", "cell": name, "kind": kind, "impl": impl, "device": "cpu",
            "preset": "hw1-q4", "dataset": "fashion-mnist", "network": "784-32-32-10 sigmoid", "dtype": dtype,
            "batch_size": 1, "seed": 0, "status": status, "reason": None if status == "FINISHED" else "boom",
            "samples_per_second_median": rate, "samples_per_second_q1": rate, "samples_per_second_q3": rate,
            "roofline_fraction": rate * 1e5 / (peak * 1e9), "compile_seconds": 0.0, "test_accuracy": acc,
            "time_to_target_seconds": np.nan, "target_accuracy": 0.8, "parity_max_error": 0.0,
            "flops_per_sample": 1e5, "session": f"s-{machine}", "machine": machine}


def frame():
    rows = []
    for m, speed, acc64, acc32 in (("laptop", 1.0, 0.8125, 0.7000), ("ci", 2.0, 0.8125, 0.70005),
                                   ("gpu-box", 4.0, 0.8126, 0.7000)):
        rows += [cell(m, "throughput/numpy-sample/b1", "numpy-sample", "throughput", "float32", 1000 * speed),
                 cell(m, "throughput/numba-sample/b1", "numba-sample", "throughput", "float32", 9000 * speed),
                 cell(m, "accuracy/numpy-sample/f64", "numpy-sample", "accuracy", "float64", 900 * speed, acc64),
                 cell(m, "accuracy/numba-sample/f32", "numba-sample", "accuracy", "float32", 8000 * speed, acc32)]
    rows.append(cell("gpu-box", "throughput/torch-cuda/b1", "torch-cuda", "throughput", "float32", 50000))
    return pd.DataFrame(rows)


def test_a_machine_whose_accuracy_differs_beyond_the_parity_tolerance_is_flagged_and_only_it():
    verdicts = accuracy_verdicts(frame(), TOL)
    # float64: 0.8126 vs 0.8125 is far beyond 1e-9 relative; float32: 0.70005 vs 0.7 is within 1e-3
    assert verdicts["accuracy/numpy-sample/f64", "gpu-box"].startswith("DIFFERS: 0.8126 vs 0.8125")
    assert verdicts["accuracy/numpy-sample/f64", "laptop"] == verdicts["accuracy/numpy-sample/f64", "ci"] == "agrees"
    assert {verdicts["accuracy/numba-sample/f32", m] for m in ("laptop", "ci", "gpu-box")} == {"agrees"}
    tighter = accuracy_verdicts(frame(), {**TOL, "float32": 1e-6})
    assert tighter["accuracy/numba-sample/f32", "ci"].startswith("DIFFERS")


def test_each_machine_is_measured_against_its_own_numpy_sample_and_peak():
    table = machines_table(frame(), TOL, impls.SPEEDUP_BASE)
    row = table[(table["cell"] == "throughput/numba-sample/b1") & (table["machine"] == "gpu-box")].iloc[0]
    assert row["samples/s"] == "36,000" and row["speed-up over own numpy-sample"] == "9.00x"
    assert row["% of own peak"] == f"{100 * 36000 * 1e5 / 1e11:.3f}"
    missing = table[(table["cell"] == "throughput/torch-cuda/b1") & (table["machine"] == "laptop")].iloc[0]
    assert missing["samples/s"] == "not run" and "not in this machine's session" in missing["status"]
    assert list(dict.fromkeys(table["machine"])) == ["laptop", "ci", "gpu-box"]


def test_a_failed_cell_says_so_and_the_figure_has_one_bar_per_machine(tmp_path):
    cells = frame()
    cells.loc[(cells["machine"] == "ci") & (cells["impl"] == "numba-sample"), "status"] = "FAILED"
    table = machines_table(cells, TOL, impls.SPEEDUP_BASE)
    failed = table[(table["cell"] == "throughput/numba-sample/b1") & (table["machine"] == "ci")].iloc[0]
    assert failed["samples/s"] == "failed" and failed["status"].startswith("FAILED")
    fig = machines_figure(cells)
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == 3 + 2 + 1          # numpy-sample x3 machines, numba-sample x2 (one failed), torch-cuda x1
    sessions = pd.DataFrame({"machine": ["laptop", "ci", "gpu-box"], "session": ["a", "b", "c"],
                             "mode": "dry-run", "started": "2026", "peak_gemm_gflops": 100.0, "cpu": "x", "gpu": "none"})
    paths, _ = write_machines_report(cells, sessions, TOL, tmp_path, impls.SPEEDUP_BASE)
    md = paths["markdown"].read_text()
    assert "1 machine-cell(s) differ" in md and "| gpu-box |" in md
    assert paths["figure"].stat().st_size > 10_000


@pytest.mark.integration
def test_the_machine_label_and_the_servers_refusals_come_before_any_work(tmp_path):
    bad = run_cli("bench", "--dry-run", "--machine", "two words", "--tracking-uri", f"sqlite:///{tmp_path}/m.db")
    assert bad.returncode == 2 and "--machine" in bad.stderr and not (tmp_path / "m.db").exists()
    both = run_cli("report", "--run-id", "a" * 32, "--latest-per-machine")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    secret = "Db-pw-91xQ"
    no_admin = run_cli("server", "--auth", "--backend-store-uri", f"postgresql://u:{secret}@db.invalid/x",
                       env={"MLFLOW_AUTH_ADMIN_PASSWORD": ""})
    assert no_admin.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in no_admin.stderr
    loose = tmp_path / "auth.ini"
    loose.write_text(f"[mlflow]\nadmin_username = admin\nadmin_password = {secret}\n")
    loose.chmod(0o644)
    refused = run_cli("server", "--auth", "--auth-file", str(loose), "--backend-store-uri", "postgresql://u@db.invalid/x")
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
    short = "S3cretPW9x"                                 # 10 characters: MLflow's auth app needs 12
    too_short = run_cli("server", "--auth", "--backend-store-uri", "postgresql://u@db.invalid/x",
                        env={"MLFLOW_AUTH_ADMIN_PASSWORD": short})
    assert too_short.returncode == 2, too_short.stdout + too_short.stderr
    assert "is refused by MLflow: Password must be at least 12 characters" in too_short.stderr
    assert short not in too_short.stdout + too_short.stderr and "Traceback" not in too_short.stderr
    for done in (no_admin, refused):
        assert secret not in done.stdout + done.stderr and "Traceback" not in done.stderr
