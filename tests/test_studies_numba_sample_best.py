"""The numba family's reference kernel (studies/yardsticks/numba_sample_best.py) against the
float64 reference, within the parity table: it is what numba-sample is measured against, so
it must compute the same training. Same grid as tests/test_conformance.py for per-sample SGD."""
import numpy as np
import pytest

import impls
from studies.yardsticks.numba_sample_best import NumbaSampleBest
from impls.oracle import train_epoch as reference_train
from tests.tiers import grid

NETS = {
    "sigmoid": impls.NetSpec((784, 32, 32, 10), "sigmoid"),
    "relu": impls.NetSpec((784, 48, 24, 10), "relu"),
    "odd": impls.NetSpec((784, 30, 17, 10), "sigmoid"),   # hidden widths not multiples of 4
}
N = 1000


# the fast tier keeps the odd widths in float64 (tests/tiers.py); the default tier, every row
@pytest.mark.parametrize(*grid(lambda net, dtype: net == "odd" and dtype == "float64", net=list(NETS), dtype=impls.DTYPES))
def test_one_epoch_parity(net, dtype, small):
    x, y = small
    order = np.random.default_rng(7).permutation(N)
    spec = NETS[net]
    params = impls.init_params(spec, seed=11, scheme="xavier")
    want, want_loss = reference_train(spec, params, x, y, order, lr=0.05)
    impl = NumbaSampleBest(spec, params, lr=0.05, dtype=dtype)
    loss = impl.train_epoch(x.astype(dtype), y, order)
    err = impls.parity_error(impl.get_params(), want)
    assert err <= impls.PARITY_TOLERANCE[dtype], f"{net} {dtype}: parameter error {err:.2e}"
    assert abs(loss - want_loss) <= impls.PARITY_TOLERANCE[dtype] * max(1.0, abs(want_loss))
    proba = impl.predict_proba(x[:20].astype(dtype))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    # a second epoch continues from the first (the pending W1 update was flushed)
    want2, _ = reference_train(spec, want, x, y, order[:100], lr=0.05)
    impl.train_epoch(x.astype(dtype), y, order[:100])
    assert impls.parity_error(impl.get_params(), want2) <= impls.PARITY_TOLERANCE[dtype]


def test_refuses_what_it_does_not_run():
    spec = NETS["sigmoid"]
    params = impls.init_params(spec, 0)
    with pytest.raises(impls.ConfigError, match="plain SGD"):
        NumbaSampleBest(spec, params, lr=0.1, optimizer="adam")
    with pytest.raises(impls.ConfigError, match="plain SGD"):
        NumbaSampleBest(spec, params, lr=0.1, momentum=0.9)
    deep = impls.NetSpec((784, 32, 32, 32, 10))
    with pytest.raises(impls.ConfigError, match="two hidden layers"):
        NumbaSampleBest(deep, impls.init_params(deep, 0), lr=0.1)
    with pytest.raises(impls.ConfigError, match="batch size 1 only"):
        NumbaSampleBest(spec, params, lr=0.1, batch_size=32)
    assert "numba-sample-best" not in impls.names()
