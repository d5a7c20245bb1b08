"""Optimizers and the textbook loop: the flat in-place optimizer against the
formulas as written, numpy-sample's sigmoid at the float32 limits, and torch's optimizer
kernel recorded as a param of the cell."""
import warnings

import numpy as np
import pytest

import impls
from impls.optim import FlatOptimizer, Optimizer

SETTINGS = [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)]


@pytest.mark.parametrize("kind, momentum", SETTINGS)
def test_flat_optimizer_computes_the_documented_formulas(kind, momentum):
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (5,), (5, 3), (3,)]
    arrays = [rng.normal(size=s) for s in shapes]
    flat = np.concatenate([a.ravel() for a in arrays])
    lists = Optimizer(arrays, kind, 1e-2, momentum)
    fused = FlatOptimizer(flat.size, flat.dtype, kind, 1e-2, momentum)
    for _ in range(200):
        grads = [rng.normal(size=s) for s in shapes]
        lists.step(arrays, grads)
        fused.step(flat, np.concatenate([g.ravel() for g in grads]))
    want = np.concatenate([a.ravel() for a in arrays])
    assert impls.relative_error(flat, want) < 1e-12


@pytest.mark.parametrize("name", ["numpy-sample", "numpy-batch"])
def test_sigmoid_of_a_very_negative_float32_is_zero_without_a_warning(name):
    spec = impls.NetSpec((4, 3, 2), "sigmoid")
    params = [(np.full((4, 3), 1e3), np.zeros(3)), (np.ones((3, 2)), np.zeros(2))]
    x = np.array([[-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)  # z = -4000 and 4000
    net = impls.get(name)(spec, params, lr=0.1, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = net.train_epoch(x, np.array([0, 1]), np.array([0, 1]))
        proba = net.predict_proba(x)
    assert np.isfinite(loss) and np.isfinite(proba).all()
    assert all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in net.get_params())
    from impls.oracle import sigmoid
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sigmoid(np.float32([-1e4, 0, 1e4])).tolist() == [0.0, 0.5, 1.0]


def test_torch_cpu_optimizer_kernel_is_a_param_of_the_cell(fashion):
    pytest.importorskip("torch")
    from benchmarks import cells
    from benchmarks.config import PRESETS
    from benchmarks.plan import BenchOptions, Cell
    from tests.helpers import PEAKS, Recorder
    config = PRESETS["hw1-q3"].replace(impl="torch-cpu", epochs=1, train_limit=512, test_limit=128)
    rec = Recorder()
    cells.run_group([Cell("accuracy", config)], fashion, rec, PEAKS, BenchOptions())
    assert [o.status for o in rec.closed] == ["FINISHED"], rec.closed[0].reason
    assert rec.params["impl.optimizer_kernel"] == "fused"
    assert any(tags.get("impl.optimizer_kernel") == "fused" for _, tags, _ in rec.logged)
