"""The peers (impls/sklearn_mlp.py, impls/jax_cpu.py) beyond the conformance grid: what holds
where sklearn's math differs, jax-cpu's scanned path, the optional-backend reasons, and XLA's
thread flag. The parity grid itself is tests/test_conformance.py (``-k "sklearn or jax"``)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import impls
from impls import oracle
from tests.helpers import ROOT

SPEC = impls.NetSpec((784, 48, 24, 10), "relu")


def runnable(name, dtype="float64", batch=32):
    reason = impls.runnable(name, dtype=dtype, batch_size=batch)
    if reason:
        pytest.skip(reason)
    return impls.get(name)


@pytest.fixture(scope="module")
def problem(small):
    x, y = small
    return x, y, np.random.default_rng(7).permutation(len(x)), impls.init_params(SPEC, 11, "he")


def test_sklearn_adam_is_the_projects_adam_with_eps_scaled(problem):
    """Against the project's Adam (impls/optim.py) sklearn's differs (its eps is not
    bias-corrected), measurably but not in what training reaches: the epoch's loss and the
    predictions agree closely; against the variant with eps * sqrt(1 - b2^t) it is exact."""
    cls = runnable("sklearn-mlp")
    x, y, order, params = problem
    net = cls(SPEC, params, lr=1e-3, batch_size=32, optimizer="adam")
    loss = net.train_epoch(x, y, order)
    project, project_loss = oracle.train_epoch(SPEC, params, x, y, order, lr=1e-3, batch_size=32, optimizer="adam")
    own, own_loss = cls.parity_reference(SPEC, params, x, y, order, lr=1e-3, batch_size=32, optimizer="adam")
    assert impls.parity_error(net.get_params(), own) <= impls.PARITY_TOLERANCE["float64"]
    assert abs(loss - own_loss) <= 1e-9
    differs = impls.parity_error(net.get_params(), project)
    assert 1e-6 < differs < 1.0, differs          # not the same math, and not unrelated either
    assert abs(loss - project_loss) < 1e-3        # measured 8.9e-05 (relu, batch 32)
    ours = impls.get("numpy-batch")(SPEC, project, lr=1e-3, batch_size=32)
    agree = (net.predict_proba(x).argmax(1) == ours.predict_proba(x).argmax(1)).mean()
    assert agree > 0.97, agree


def test_sklearn_keeps_the_run_dtype_and_refuses_two_classes(problem):
    cls = runnable("sklearn-mlp", "float32")
    x, y, order, params = problem
    net = cls(SPEC, params, lr=0.05, batch_size=64, dtype="float32")
    net.train_epoch(x.astype(np.float32), y, order)
    assert all(W.dtype == np.float32 and b.dtype == np.float32 for W, b in net.get_params())
    assert net.predict_proba(x[:5].astype(np.float32)).dtype == np.float32
    two = impls.NetSpec((784, 8, 2), "relu")
    with pytest.raises(impls.ConfigError, match="at least 3 classes"):
        cls(two, impls.init_params(two, 0), lr=0.1)


# float32 in the default tier only: each row compiles its own XLA programs (about a second)
@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.integration)])
def test_jax_scanned_chunks_hold_parity(problem, dtype, monkeypatch):
    """The conformance grid's epochs are shorter than one CHUNK: here a small CHUNK sends most
    batches through lax.scan, the rest and a short last batch through single steps."""
    cls = runnable("jax-cpu", dtype)
    from impls import jax_cpu
    monkeypatch.setattr(jax_cpu, "CHUNK", 4)
    x, y, order, params = problem
    order = order[:1000 - 13]                               # 30 full batches of 32, then 27
    want, want_loss = oracle.train_epoch(SPEC, params, x, y, order, lr=1e-3, batch_size=32, optimizer="adam")
    net = cls(SPEC, params, lr=1e-3, batch_size=32, dtype=dtype, optimizer="adam")
    before = net.get_params()
    net.warm_up(x.astype(dtype), y)
    assert impls.parity_error(net.get_params(), before) == 0   # warm_up leaves the state alone
    loss = net.train_epoch(x.astype(dtype), y, order)
    assert impls.parity_error(net.get_params(), want) <= impls.PARITY_TOLERANCE[dtype]
    assert abs(loss - want_loss) <= impls.PARITY_TOLERANCE[dtype]


def test_missing_backends_are_reasons_not_errors(monkeypatch):
    monkeypatch.setattr(impls, "_AVAILABLE", {})
    monkeypatch.setitem(sys.modules, "sklearn.neural_network", None)
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.delitem(sys.modules, "impls.jax_cpu", raising=False)
    reasons = impls.available()
    assert reasons["sklearn-mlp"].startswith("cannot import its backend")
    assert reasons["jax-cpu"].startswith("cannot import its backend")
    assert reasons["numpy-batch"] is None
    assert "sklearn-mlp: cannot import" in impls.runnable("sklearn-mlp", dtype="float32", batch_size=256)


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs to tell one thread from several")
def test_one_thread_confines_xla_to_one_cpu():
    """XLA_FLAGS' one-thread flags no longer confine XLA's pool (impls/jax_cpu.py): pinned to one
    thread, a jitted GEMM loop must spend no more CPU time than wall time, and every thread of
    the process, XLA's included, must be allowed one CPU only, until a wider pin gives them back."""
    runnable("jax-cpu")
    code = ("import os, time; from benchmarks import threads; import impls; impls.get('jax-cpu'); "
            "s = threads.pin_threads(1); import jax, jax.numpy as jnp; "
            "a = jnp.ones((256, 784), jnp.float32); b = jnp.ones((784, 256), jnp.float32); "
            "f = jax.jit(lambda a, b: a @ b); f(a, b).block_until_ready(); "
            "c0, t0 = time.process_time(), time.perf_counter(); "
            "[f(a, b) for _ in range(300)][-1].block_until_ready(); "
            "print((time.process_time() - c0) / (time.perf_counter() - t0)); print(s['jax']); "
            "print(max(len(os.sched_getaffinity(int(t))) for t in os.listdir('/proc/self/task'))); "
            "threads.pin_threads(64); print(min(len(os.sched_getaffinity(int(t))) for t in os.listdir('/proc/self/task')))")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "BPB_THREADS")}
    cpu_per_wall, setting, widest, back = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        env=env).stdout.splitlines()
    assert setting.startswith("1 (CPU affinity ")
    assert int(widest) == 1
    assert float(cpu_per_wall) < 1.1     # two busy threads would read near 2; one CPU cannot exceed 1
    assert int(back) == len(os.sched_getaffinity(0))     # a wider pin gives every CPU back
