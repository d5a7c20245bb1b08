"""``Implementation.optimizer_step_site`` (impls/base.py): the callable it names is what
``train_epoch`` calls once per batch, so wrapping it counts every optimizer step of an epoch."""
import numpy as np
import pytest

import impls


def _net(name):
    spec = impls.NetSpec((20, 16, 10), "relu")
    why = impls.available_reason(name)
    if why:
        pytest.skip(why)
    return impls.get(name)(spec, impls.init_params(spec, 0, "he"), lr=1e-3, batch_size=8, dtype="float32",
                           optimizer="adam")


@pytest.mark.parametrize("name", ["numpy-batch", "torch-cpu"])
def test_wrapping_the_site_counts_one_call_per_batch(name):
    net = _net(name)
    site = net.optimizer_step_site()
    assert site is not None, f"{name} applies its step through a call of its own"
    owner, attr = site
    inner, calls = getattr(owner, attr), []

    def counted(*args, **kwargs):
        calls.append(1)
        return inner(*args, **kwargs)
    setattr(owner, attr, counted)
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 20), dtype=np.float32), rng.integers(0, 10, 100)
    before = [W.copy() for W, _ in net.get_params()]
    net.train_epoch(x, y, np.arange(100))
    assert len(calls) == 13                                  # 12 full batches of 8 and one of 4
    assert any(not np.array_equal(W, W0) for (W, _), W0 in zip(net.get_params(), before))  # the real step ran


def test_the_default_is_none():
    class Fused(impls.Implementation):
        name = "fused"
    spec = impls.NetSpec((4, 3), "relu")
    assert Fused(spec, impls.init_params(spec, 0, "he"), lr=0.1).optimizer_step_site() is None
