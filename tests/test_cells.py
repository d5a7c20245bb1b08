"""A group of cells in one process (benchmarks/cells.py): an implementation is prepared once per
cell, and a cell that raises is failed with its reason while the group goes on."""
import impls
from benchmarks.plan import BenchOptions
from tests.helpers import PEAKS, Recorder


def test_an_accuracy_cell_prepares_its_implementation_exactly_once(fashion, monkeypatch):
    from benchmarks import cells, runner
    from benchmarks.config import PRESETS
    from benchmarks.plan import Cell
    first_calls, instances = [], []
    measure = runner.measure_first_call
    monkeypatch.setattr(runner, "measure_first_call", lambda p: first_calls.append(p.config.impl) or measure(p))
    cls = impls.get("numpy-batch")
    init = cls.__init__
    monkeypatch.setattr(cls, "__init__", lambda self, *a, **kw: instances.append(1) or init(self, *a, **kw))
    config = PRESETS["hw1-q3"].replace(impl="numpy-batch", epochs=2, train_limit=1024, test_limit=256)
    rec = Recorder()
    cells.run_group([Cell("accuracy", config)], fashion, rec, PEAKS, BenchOptions())
    assert [o.status for o in rec.closed] == ["FINISHED"], rec.closed[0].reason
    assert first_calls == ["numpy-batch"]
    # one throwaway for the first call, one for the parity step, one trained: never a second preparation
    assert len(instances) == 3
    compile_logged = [m["compile_seconds"] for m, _, _ in rec.logged if "compile_seconds" in m]
    assert compile_logged == [rec.closed[0].summary["compile_seconds"]]
    assert [step for m, _, step in rec.logged if "epoch/test_accuracy" in m] == [1, 2]


def test_a_raising_cell_is_failed_with_its_reason_and_the_group_goes_on(fashion, monkeypatch):
    from benchmarks import cells
    from benchmarks.config import PRESETS
    from benchmarks.plan import Cell
    from tests import faults
    monkeypatch.setattr(impls.get("torch-cpu"), "train_epoch", impls.get("torch-cpu").train_epoch)
    faults.raise_in_torch_cpu()
    base = PRESETS["hw1-q4"].replace(epochs=1, train_limit=300, test_limit=100)
    group = [Cell("accuracy", base.replace(impl="torch-cpu")), Cell("accuracy", base.replace(impl="numpy-sample"))]
    rec = Recorder()
    cells.run_group(group, fashion, rec, PEAKS, BenchOptions())
    assert [o.status for o in rec.closed] == ["FAILED", "FINISHED"]
    assert rec.closed[0].reason == "RuntimeError: injected failure in torch-cpu"
