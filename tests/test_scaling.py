"""torch-ddp's scaling section: its ratios, its per-rank statistics, its frame kept apart from the
cells', the report's sentences against the rows they name, and the dry-run session's records."""
import math

import numpy as np
import pandas as pd
import pytest

import impls
from benchmarks.plan import BenchOptions, plan, scaling_cells
from benchmarks.scaling import rank_stats, ratios, threads_of
from benchmarks.threads import all_cores
from reports.scaling import failures, scaling_section, sentences, table
from tracking.tidy import SCALING_COLUMNS, tidy, tidy_scaling


def _cells(cores=2):
    return {c.role: c for c in scaling_cells(BenchOptions(), cores=cores)[0]}


def test_efficiency_is_throughput_k_over_k_times_one_and_overhead_is_one_rank_over_torch_cpu():
    cells = _cells()
    medians = {"base": 50_000.0, "1-rank": 40_000.0}
    assert ratios(cells["1-rank"], 40_000.0, medians) == {"ddp_overhead": 0.8}
    assert ratios(cells["strong"], 20_000.0, medians) == {"scaling_efficiency": 0.25}
    assert ratios(cells["weak"], 60_000.0, medians) == {"scaling_efficiency": 0.75}
    # threads: the same formula, over torch-cpu on one rank's share
    assert ratios(cells["threads-2"], 80_000.0, medians) == {"scaling_efficiency": 0.8}
    assert ratios(cells["base"], 50_000.0, medians) == {}
    # no 1-rank figure (it failed): no efficiency, rather than one over nothing
    assert ratios(cells["strong"], 20_000.0, {"base": 50_000.0}) == {}
    # each case's threads: t per rank, k x t for threads-k (eight cores: N = 4, t = 2)
    eight = {(c.role, c.config.world_size): c for c in scaling_cells(BenchOptions(), cores=8)[0]}
    per_rank = 2
    assert threads_of(eight["base", None], per_rank) == 2 and threads_of(eight["1-rank", 1], per_rank) == 2
    assert threads_of(eight["strong", 3], per_rank) == 6
    assert threads_of(next(c for (r, _), c in eight.items() if r == "threads-4"), per_rank) == 8


def test_rank_statistics_pool_every_step_of_every_round_per_rank():
    rounds = [{"rank": 0, "step_seconds": [0.001, 0.002, 0.003], "allreduce_seconds": [0.0005, 0.0005, 0.0005]},
              {"rank": 1, "step_seconds": [0.004, 0.004, 0.004], "allreduce_seconds": [0.002, 0.002, 0.002]},
              {"rank": 0, "step_seconds": [0.004], "allreduce_seconds": [0.0005]},
              {"rank": 1, "step_seconds": [0.004], "allreduce_seconds": [0.002]}]
    s = rank_stats(rounds)
    assert s["rank0/step_ms_p50"] == pytest.approx(2.5) and s["rank1/step_ms_p50"] == pytest.approx(4.0)
    assert s["rank0/step_ms_p95"] == pytest.approx(1e3 * np.percentile([0.001, 0.002, 0.003, 0.004], 95))
    assert s["step_ms_p50"] == pytest.approx(4.0)                    # the slowest rank's
    assert s["rank0/allreduce_share"] == pytest.approx(0.002 / 0.010)
    assert s["allreduce_share"] == pytest.approx((0.2 + 0.5) / 2)
    assert rank_stats([]) == {}                                     # torch-cpu: no ranks


def _raw(rows):
    """MLflow's frame as ``search_runs`` gives it, for the cells described by ``rows``."""
    out = []
    for i, r in enumerate(rows):
        out.append({"run_id": f"r{i}", "status": r.get("status", "FINISHED"), "tags.bpb.cell_kind": r["kind"],
                    "tags.bpb.cell": f"{r['kind']}/{r.get('role', '')}/{i}", "tags.implementation": r["impl"],
                    "params.scaling_role": r.get("role"), "params.preset": "hw1-q3", "params.dtype": "float32",
                    "params.sizes": "(784, 256, 128, 64, 10)", "params.activation": "relu",
                    "params.batch_size": str(r.get("batch", 256)), "params.world_size": str(r.get("ws")),
                    "params.batch_per_rank": str(r.get("batch", 256) // (r.get("ws") or 1)),
                    "params.threads": str(r.get("threads", 1)), "params.threads_per_rank": "1",
                    "params.rounds": "5", "params.round_samples": "20000",
                    "tags.bpb.failure_reason": r.get("reason"),
                    "metrics.samples_per_second_median": r.get("rate", math.nan),
                    "metrics.samples_per_second_q1": r.get("rate", math.nan) * 0.9,
                    "metrics.samples_per_second_q3": r.get("rate", math.nan) * 1.1,
                    "metrics.scaling_efficiency": r.get("eff", math.nan), "metrics.ddp_overhead": r.get("over", math.nan),
                    "metrics.step_ms_p50": r.get("p50", math.nan), "metrics.step_ms_p95": r.get("p95", math.nan),
                    "metrics.allreduce_share": r.get("share", math.nan),
                    "metrics.load_average_start": 0.5, "metrics.load_average_end": 0.75})
    return pd.DataFrame(out)


SECTION = [dict(kind="throughput", impl="torch-cpu", rate=99_000.0),
           dict(kind="scaling", role="threads-2", impl="torch-cpu", threads=2, rate=80_000.0, eff=0.8),
           dict(kind="scaling", role="weak", impl="torch-ddp", ws=2, batch=512, threads=2, rate=30_000.0, eff=0.375,
                p50=8.0, p95=18.0, share=0.26),
           dict(kind="scaling", role="strong", impl="torch-ddp", ws=2, threads=2, rate=38_000.0, eff=0.475,
                p50=4.5, p95=5.5, share=0.27),
           dict(kind="scaling", role="1-rank", impl="torch-ddp", ws=1, rate=40_000.0, over=0.8, p50=5.0, p95=8.0,
                share=0.04),
           dict(kind="scaling", role="base", impl="torch-cpu", rate=50_000.0)]


def test_scaling_cells_stay_out_of_the_cells_frame_and_come_back_in_their_own_in_order():
    raw = _raw(SECTION)
    cells, _ = tidy(raw, pd.DataFrame(columns=["run_id", "key", "step", "value"]))
    assert cells["kind"].tolist() == ["throughput"]          # no table, headline or gate sees a case
    frame = tidy_scaling(raw)
    assert list(frame.columns) == SCALING_COLUMNS
    assert frame["role"].tolist() == ["base", "1-rank", "strong", "weak", "threads-2"]
    assert frame["world_size"].tolist() == [1, 1, 2, 2, 1]
    assert tidy_scaling(_raw(SECTION[:1])).empty


def test_the_report_section_says_what_its_rows_hold():
    frame = tidy_scaling(_raw(SECTION))
    text = "\n".join(sentences(frame))
    assert "1 thread per rank, world sizes 1 to 2" in text and "5 interleaved rounds of 20,000 samples" in text
    assert "load average 0.50 before the rounds, 0.75 after" in text
    assert ("DDP's overhead: 1 rank runs at 0.80x torch-cpu on the same 1 thread (40,000 samples/s against "
            "50,000 samples/s)") in text
    assert "strong scaling efficiency 0.47 (38,000 samples/s, 128 per rank), the all-reduce 27% of a step" in text
    assert "weak scaling efficiency 0.38 (30,000 samples/s at global batch 512)" in text
    # ranks against the same cores as threads: slower here, by the ratio of the two rates
    assert "80,000 samples/s (efficiency 0.80 against 2 x torch-cpu on one rank's 1 thread); 2 ranks at the " \
           "same global batch are slower, 0.47x" in text
    rows = table(frame)
    assert rows["efficiency"].tolist() == ["-", "DDP overhead 0.80x", "0.47", "0.38", "0.80"]
    assert rows["step p50 / p95 ms (slowest rank)"].tolist() == ["-", "5.00 / 8.00", "4.50 / 5.50", "8.00 / 18.00", "-"]
    title, lines, _ = scaling_section(frame)
    assert title.startswith("Scaling") and failures(frame) == []
    assert scaling_section(tidy_scaling(_raw(SECTION[:1]))) is None


def test_a_failed_case_is_flagged_and_its_figures_are_not_invented():
    broken = [dict(r) for r in SECTION]
    for r in broken:
        if r.get("role") == "strong":
            r.update(status="FAILED", reason="RankFailed: torch-ddp: rank 1 exited with status -9 (in round 2)",
                     rate=math.nan, eff=math.nan)
    frame = tidy_scaling(_raw(broken))
    text = "\n".join(sentences(frame))
    assert "strong scaling" not in text and "2 ranks at the same global batch" not in text
    assert "weak scaling efficiency 0.38" in text
    assert failures(frame) == [f"FAILED: {frame['cell'][2]}: RankFailed: torch-ddp: rank 1 exited with status -9 "
                               "(in round 2)"]
    assert table(frame)["samples/s (median)"].tolist()[2] == "FAILED"


def _ddp_runs():
    if impls.available_reason("torch-ddp"):
        pytest.skip(f"torch-ddp: {impls.available_reason('torch-ddp')}")
    if all_cores() < 2:
        pytest.skip("one core: no scaling section")


@pytest.mark.integration
def test_the_dry_run_session_records_the_scaling_section(dry_run):
    from tests.test_session import runs_of
    _ddp_runs()
    uri, proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    client, parents, children = runs_of(uri)
    cases = children[children["tags.bpb.cell_kind"] == "scaling"].set_index("params.scaling_role")
    assert sorted(cases.index) == ["1-rank", "base", "strong", "threads-2", "weak"]
    assert (cases["status"] == "FINISHED").all()
    assert (cases["metrics.parity_max_error"] <= impls.PARITY_TOLERANCE["float32"]).all()
    for role in ("strong", "weak", "threads-2"):
        assert 0 < cases.at[role, "metrics.scaling_efficiency"] < 2
    one, base = cases.loc["1-rank"], cases.loc["base"]
    assert one["metrics.ddp_overhead"] == pytest.approx(one["metrics.samples_per_second_median"]
                                                        / base["metrics.samples_per_second_median"])
    strong = cases.loc["strong"]
    assert strong["metrics.scaling_efficiency"] == pytest.approx(
        strong["metrics.samples_per_second_median"] / (2 * one["metrics.samples_per_second_median"]))
    for r in (0, 1):
        assert strong[f"metrics.rank{r}/step_ms_p95"] >= strong[f"metrics.rank{r}/step_ms_p50"] > 0
        assert 0 < strong[f"metrics.rank{r}/allreduce_share"] < 1
    assert strong["params.world_size"] == "2" and strong["params.batch_per_rank"] == "128"
    assert cases.at["weak", "params.batch_size"] == "512" and cases.at["threads-2", "params.threads"] == "2"
    for rid in cases["run_id"]:
        assert len(client.get_metric_history(rid, "round/samples_per_second")) == 3     # the dry run's rounds
    # the report: its section and figure, and nothing of it in the headline
    md = (report / "latest" / "report.md").read_text()
    assert "## Scaling: data parallelism with torch-ddp" in md and (report / "latest" / "scaling.png").is_file()
    assert f"1 rank runs at {one['metrics.ddp_overhead']:.2f}x torch-cpu" in md
    headline = md.split("## Flags")[0]
    assert "torch-ddp" not in headline
    assert "scaling/" not in md.split("## Cells")[1].split("## Scaling")[0]


@pytest.mark.integration
def test_a_rank_killed_in_the_rounds_fails_its_cases_and_the_others_are_kept(tmp_path, fashion, monkeypatch):
    import tracking
    from benchmarks.session import SessionSettings, run_session
    from tests.test_session import runs_of
    _ddp_runs()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = BenchOptions.make("dry-run", impls=("torch-ddp",), presets=(), batch_sizes=())
    assert {c.kind for c in plan(options)[0]} == {"scaling"}
    monkeypatch.setenv("BPB_FAULT", "tests.faults:kill_a_rank_of_two")
    settings = SessionSettings(out_dir=str(tmp_path / "report"), mode="dry-run")
    lines = []
    rc, _ = run_session(options, fashion, tracking.connect(uri), settings, log=lines.append)
    assert rc == 1
    _, parents, children = runs_of(uri)
    assert parents["status"].tolist() == ["FINISHED"]
    status = children.set_index("params.scaling_role")["status"].to_dict()
    assert status == {"base": "FINISHED", "1-rank": "FINISHED", "strong": "FAILED", "weak": "FAILED",
                      "threads-2": "FINISHED"}
    reasons = children.set_index("params.scaling_role")["tags.bpb.failure_reason"]
    assert "rank 1 exited" in reasons["strong"] and "(in round 2)" in reasons["strong"]
    md = next((tmp_path / "report").glob("*/report.md")).read_text()
    assert "FAILED: scaling/strong/torch-ddp" in md and "strong scaling efficiency" not in md
    assert "DDP's overhead: 1 rank runs at" in md
