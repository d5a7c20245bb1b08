"""The float64 oracle's gradients (impls/oracle.py) against central differences in float64,
and the homework's bias-gradient bug caught by the same check."""
import numpy as np
import pytest

import impls
from impls import oracle

TOL = 1e-6


def numerical_gradients(params, x, y, activation, h=1e-5):
    def loss():
        return oracle.mean_loss_and_gradients(params, x, y, activation)[0]
    out = []
    for W, b in params:
        grads = []
        for arr in (W, b):
            g = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                old = arr[idx]
                arr[idx] = old + h
                up = loss()
                arr[idx] = old - h
                down = loss()
                arr[idx] = old
                g[idx] = (up - down) / (2 * h)
            grads.append(g)
        out.append(tuple(grads))
    return out


def max_relative_error(analytic, numeric) -> float:
    worst = 0.0
    for pa, pn in zip(analytic, numeric):
        for a, n in zip(pa, pn):
            denom = np.maximum(np.maximum(np.abs(a), np.abs(n)), 1e-8)
            worst = max(worst, float((np.abs(a - n) / denom).max()))
    return worst


def problem(activation, seed=3):
    rng = np.random.default_rng(seed)
    spec = impls.NetSpec((7, 6, 5, 4), activation)
    params = impls.init_params(spec, seed, "xavier")
    # non-zero biases, so a wrong bias gradient cannot hide behind b = 0
    params = [(W, rng.normal(0, 0.3, size=b.shape)) for W, b in params]
    x = rng.random((5, 7))
    y = rng.integers(0, 4, size=5)
    return params, x, y


@pytest.mark.parametrize("activation", impls.ACTIVATIONS)
def test_reference_gradients_match_central_differences(activation):
    params, x, y = problem(activation)
    _, analytic = oracle.mean_loss_and_gradients(params, x, y, activation)
    numeric = numerical_gradients(params, x, y, activation)
    err = max_relative_error(analytic, numeric)
    assert err < TOL, f"max relative gradient error {err:.2e} >= {TOL}"
    # every parameter was checked: the check saw non-trivial gradients everywhere it matters
    assert all(np.abs(g).max() > 1e-6 for pair in analytic for g in pair)


def homework_bias_gradient(upstream, dact):
    """The homework's bug: one scalar, dot(upstream, act'(z)), for the whole layer."""
    return np.full_like(upstream, upstream @ dact)


@pytest.mark.parametrize("activation", impls.ACTIVATIONS)
def test_gradient_check_catches_the_homework_bias_bug(activation, monkeypatch):
    params, x, y = problem(activation)
    monkeypatch.setattr(oracle, "bias_gradient", homework_bias_gradient)
    _, analytic = oracle.mean_loss_and_gradients(params, x, y, activation)
    numeric = numerical_gradients(params, x, y, activation)  # the loss itself is unaffected
    err = max_relative_error(analytic, numeric)
    assert err > 1e-2, f"the injected bias bug went unnoticed (max relative error {err:.2e})"
    # the weights stay right: only the hidden biases are wrong
    weights_err = max_relative_error([(a[0],) for a in analytic], [(n[0],) for n in numeric])
    assert weights_err < TOL


def test_flops_per_sample_formula():
    assert impls.flops_per_sample(impls.NetSpec((784, 32, 32, 10))) == 108_416
    assert impls.flops_per_sample(impls.NetSpec((784, 256, 128, 64, 10), "relu")) == 1_052_416
    # one layer: forward and weight gradient only, no input gradient
    assert impls.flops_per_sample(impls.NetSpec((3, 2))) == 2 * 6 + 2 * 6
