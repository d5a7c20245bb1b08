"""The planner (benchmarks/plan.py): which cells a session of each mode runs, and which it
skips with a reason. Pure: nothing is trained or started."""
import pytest

import impls
from benchmarks.plan import BenchOptions, gate_options, plan, scaling_cells
from benchmarks.threads import all_cores


def test_default_plan_covers_every_available_implementation():
    available = {n for n, why in impls.available().items() if why is None and n not in impls.OPT_IN}
    cells, skipped = plan(BenchOptions())
    acc = [c for c in cells if c.kind == "accuracy"]
    thr = [c for c in cells if c.kind == "throughput"]
    assert {c.config.impl for c in acc} == available
    assert {c.config.preset for c in acc} == {"hw1-q4", "hw1-q3"}
    for name in set(impls.names()) - available - set(impls.OPT_IN):
        assert f"{name}: {impls.available()[name]}" in skipped
    assert "accuracy/numpy-sample/hw1-q3: numpy-sample takes batch size 1 only, not 256" in skipped
    sweep = {(c.config.impl, c.config.dtype, c.config.batch_size) for c in thr if c.config.preset == "hw1-q4"}
    assert ("numpy-batch", "float64", 1024) in sweep and ("torch-cpu", "float32", 32) in sweep
    assert ("numpy-sample", "float32", 32) not in sweep               # -sample: batch 1 only
    assert {b for _, _, b in sweep} == {1, 32, 256, 1024}
    # numpy-sample is also timed on hw1-q3's network, the baseline of its speed-ups
    assert {(c.config.impl, c.config.preset) for c in thr if c.config.preset == "hw1-q3"} == {("numpy-sample", "hw1-q3")}
    # the peers train hw1-q3 only (the report's Peers section) and join no sweep
    assert {c.config.preset for c in acc if impls.is_peer(c.config.impl)} <= {"hw1-q3"}
    assert not any(impls.is_peer(c.config.impl) for c in thr)


def test_an_opt_in_implementation_runs_only_where_named_and_in_the_scaling_section():
    assert impls.OPT_IN == ("torch-ddp", "torch-compile")
    for options in (BenchOptions(), BenchOptions.make("quick"), gate_options()):
        assert not any(c.config.impl in impls.OPT_IN for c in plan(options)[0] if c.kind != "scaling")
    assert not any(c.kind == "scaling" for c in plan(gate_options())[0])
    cells, _ = plan(BenchOptions.make("dry-run", impls=("torch-ddp",), scaling=False))
    assert {(c.kind, c.config.preset) for c in cells} == {("accuracy", "hw1-q4"), ("accuracy", "hw1-q3"),
                                                         ("throughput", "hw1-q4")}


def test_the_scaling_section_is_planned_where_torch_ddp_runs_on_two_cores_or_more():
    if impls.available_reason("torch-ddp"):
        pytest.skip(f"torch-ddp: {impls.available_reason('torch-ddp')}")
    cells, _ = scaling_cells(BenchOptions(), cores=2)
    assert [(c.role, c.config.impl, c.config.world_size, c.config.batch_size) for c in cells] == [
        ("base", "torch-cpu", None, 256), ("1-rank", "torch-ddp", 1, 256), ("strong", "torch-ddp", 2, 256),
        ("weak", "torch-ddp", 2, 512), ("threads-2", "torch-cpu", None, 256)]
    assert {c.config.preset for c in cells} == {"hw1-q3"} and {c.config.dtype for c in cells} == {"float32"}
    assert len({c.name for c in cells}) == len(cells)               # two torch-cpu cases at b256, two names
    # eight cores: world sizes up to 4 (torch-ddp's default cap)
    eight, _ = scaling_cells(BenchOptions(), cores=8)
    assert [c.role for c in eight if c.config.world_size == 4 or c.role == "threads-4"] == ["strong", "weak", "threads-4"]
    assert max(c.config.world_size or 1 for c in eight) == 4
    assert scaling_cells(BenchOptions(), cores=1) == ([], ["scaling: this process may use 1 core: nothing to "
                                                           "spread ranks over"])
    # float64 only: the section follows the matrix's dtype
    assert {c.config.dtype for c in scaling_cells(BenchOptions(dtypes=("float64",)), cores=2)[0]} == {"float64"}
    # the default plan has it (on a machine of two cores or more); --impl without torch-ddp, or --no-scaling, not
    if all_cores() >= 2:
        assert any(c.kind == "scaling" for c in plan(BenchOptions.make("quick"))[0])
    assert not any(c.kind == "scaling" for c in plan(BenchOptions.make("quick", impls=("numpy-batch",)))[0])
    assert not any(c.kind == "scaling" for c in plan(BenchOptions.make("quick", scaling=False))[0])


def test_peers_named_explicitly_run_everywhere_and_stay_out_of_the_gate():
    cells, _ = plan(BenchOptions.make("dry-run", impls=("numpy-batch",) + impls.PEERS))
    ran = {(c.kind, c.config.impl) for c in cells}
    for name in impls.PEERS:
        if impls.available_reason(name) is None:
            assert ("throughput", name) in ran
            assert {c.config.preset for c in cells if c.config.impl == name and c.kind == "accuracy"} == {"hw1-q4", "hw1-q3"}
    gate_cells, _ = plan(gate_options())
    assert not any(impls.is_peer(c.config.impl) for c in gate_cells)


def test_the_gate_is_another_matrix_of_the_same_planner():
    cells, _ = plan(gate_options())
    cpu = [n for n, why in impls.available().items()
           if why is None and not impls.get(n).needs_gpu and not impls.is_peer(n) and n not in impls.OPT_IN]
    acc = [c.config for c in cells if c.kind == "accuracy"]
    assert {(c.preset, c.epochs, c.train_limit) for c in acc} == {("hw1-q4", 1, 20000), ("hw1-q3", 2, 20000)}
    assert sorted({c.seed for c in acc}) == [0, 1, 2]
    speed = {c.config.impl: c.config for c in cells if c.kind == "throughput"}
    assert set(speed) == set(cpu)                                     # one speed cell each
    assert all(c.preset == "hw1-q4" and c.dtype == "float32" and c.train_limit is None for c in speed.values())
    assert speed["numpy-sample"].batch_size == 1 and speed["numpy-batch"].batch_size == 256
