"""The yardsticks in studies/yardsticks/ (not in the registry) against the float64
reference: a reference that is fast because it is wrong must fail here, as an implementation
fails tests/test_conformance.py."""
import importlib

import numpy as np
import pytest

import impls
from impls.oracle import sample_forward, train_epoch as reference_train

N = 1000
# name -> (module:Class, net, optimizer, momentum, lr, batch)
REFERENCES = {
    "homework-loop": ("studies.yardsticks.homework_loop:HomeworkLoop",
                      impls.NetSpec((784, 32, 32, 10), "sigmoid"), "sgd", 0.0, 0.05, 1),
    "torch-minimal": ("studies.yardsticks.torch_minimal:TorchMinimal",
                      impls.NetSpec((784, 48, 24, 10), "relu"), "adam", 0.0, 1e-3, 32),
}


def load(path):
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)


@pytest.mark.parametrize("dtype", impls.DTYPES)
@pytest.mark.parametrize("name", list(REFERENCES))
def test_reference_trains_to_the_float64_reference(name, dtype, small):
    path, spec, optimizer, momentum, lr, batch = REFERENCES[name]
    if name == "torch-minimal":
        pytest.importorskip("torch")
    cls = load(path)
    assert cls.name == name
    x, y = small
    order = np.random.default_rng(7).permutation(N)
    params = impls.init_params(spec, seed=11, scheme="xavier")
    want, want_loss = reference_train(spec, params, x, y, order, lr=lr, batch_size=batch,
                                      optimizer=optimizer, momentum=momentum)
    net = cls(spec, params, lr=lr, batch_size=batch, dtype=dtype, optimizer=optimizer, momentum=momentum)
    loss = net.train_epoch(x.astype(dtype), y, order)
    tol = impls.PARITY_TOLERANCE[dtype]
    got = net.get_params()
    assert impls.parity_error(got, want) <= tol
    assert abs(loss - want_loss) <= tol * max(1.0, abs(want_loss))
    assert all(W.dtype == np.dtype(dtype) and b.dtype == np.dtype(dtype) for W, b in got)
    moved = max(impls.relative_error(W0, W) for (W0, _), (W, _) in zip(params, want))
    assert moved > 10 * tol, f"the weights moved by {moved:.1e} only: the check could not fail"
    proba = net.predict_proba(x[:20].astype(dtype))
    expect = np.array([sample_forward(got, xi.astype(dtype), spec.activation)[1][-1] for xi in x[:20]])
    assert impls.relative_error(proba, expect) < 10 * tol


def test_homework_loop_takes_plain_sgd_only():
    spec = impls.NetSpec((784, 32, 32, 10), "sigmoid")
    cls = load(REFERENCES["homework-loop"][0])
    for options in ({"optimizer": "adam"}, {"momentum": 0.9}):
        with pytest.raises(impls.ConfigError, match="plain SGD only"):
            cls(spec, impls.init_params(spec, 0), lr=0.01, **options)
