"""Every registered implementation against the numpy reference (one file, the whole registry).

From the same ``init_params`` and the same sample order, each implementation trains one epoch
on 1,000 real Fashion-MNIST samples and must land on the reference's parameters within the
tolerance of its dtype. The reference runs in float64 (``impls.oracle.train_epoch``);
float32 runs are held to the float32 row of the table. Implementations that cannot run here
are skipped with the reason ``impls.available()`` gives.
"""
import contextlib
from functools import lru_cache

import numpy as np
import pytest

import impls
from impls import oracle
from tests.helpers import one_blas_thread, one_torch_thread
from tests.tiers import grid

# The one table of parity tolerances, shared with the harness's pre-timing check; the worst
# cases measured over this file's grid are written beside it in impls/base.py.
TOLERANCE = impls.PARITY_TOLERANCE
# Per-epoch mean loss and predicted probabilities: same tolerances, absolute.

NETS = {
    "sigmoid": impls.NetSpec((784, 32, 32, 10), "sigmoid"),
    "relu": impls.NetSpec((784, 48, 24, 10), "relu"),
}
OPTIMIZERS = {  # name -> (optimizer, momentum, lr)
    "sgd": ("sgd", 0.0, 0.05),
    "momentum": ("sgd", 0.9, 0.02),
    "adam": ("adam", 0.0, 1e-3),
}
N = 1000
AVAILABLE = impls.available()
# The fast tier's cover (tests/tiers.py): one implementation of each family against the float64
# oracle, float64, every optimizer on hw1's network; the rest of the matrix is in the default tier.
FAMILIES = ("numpy-sample", "numpy-batch", "numba-batch", "torch-cpu", "sklearn-mlp")


def sample_only(name) -> bool:
    """A -sample implementation (batch 1 only); False for one whose backend is missing (it skips)."""
    return not AVAILABLE[name] and impls.get(name).batch_sizes == (1,)


def implementation(name, dtype, batch):
    reason = impls.runnable(name, dtype=dtype, batch_size=batch)
    if reason:
        pytest.skip(reason)
    return impls.get(name)


@lru_cache(maxsize=None)
def reference(net, opt, batch):
    spec = NETS[net]
    optimizer, momentum, lr = OPTIMIZERS[opt]
    x, y, order, params = _problem(net)
    return oracle.train_epoch(spec, params, x, y, order, lr=lr, batch_size=batch,
                              optimizer=optimizer, momentum=momentum)


def peer_reference(cls, net, opt, batch):
    """The float64 reference of an implementation whose math differs on purpose
    (``parity_reference``: sklearn-mlp's Adam, impls/sklearn_mlp.py), else None."""
    own = getattr(cls, "parity_reference", None)
    if own is None:
        return None
    optimizer, momentum, lr = OPTIMIZERS[opt]
    x, y, order, params = _problem(net)
    return own(NETS[net], params, x, y, order, lr=lr, batch_size=batch, optimizer=optimizer, momentum=momentum)


_DATA = {}


def _problem(net):
    return _DATA[net]


@pytest.fixture(autouse=True)
def _load(small):
    if not _DATA:
        x, y = small
        order = np.random.default_rng(7).permutation(N)
        for net, spec in NETS.items():
            _DATA[net] = (x, y, order, impls.init_params(spec, seed=11, scheme="xavier"))


@pytest.fixture(autouse=True)
def _rows_on_one_thread(request):
    """Every row's BLAS on one thread, and the torch rows' torch (tests/helpers.py
    ``one_blas_thread``, ``one_torch_thread``); torch-ddp's keep the count that its default world
    size is taken from."""
    name = getattr(getattr(request.node, "callspec", None), "params", {}).get("name", "")
    with contextlib.ExitStack() as stack:
        stack.enter_context(one_blas_thread())
        if isinstance(name, str) and name.startswith("torch-") and name != "torch-ddp":
            stack.enter_context(one_torch_thread())
        yield


# torch-compile compiles each configuration for seconds (docs/performance.md, "torch.compile"): the
# default tier runs a cover of its rows (both networks, both dtypes, both batch sizes, SGD and
# Adam), ``pytest -m slow`` the others
COMPILED_COVER = {("relu", "adam", 32, "float32"), ("sigmoid", "sgd", 1, "float64")}


def compiled_slow(name, net, opt, batch, dtype):
    return name == "torch-compile" and (net, opt, batch, dtype) not in COMPILED_COVER


def fast_epoch(name, net, opt, batch, dtype):
    return name in FAMILIES and net == "sigmoid" and dtype == "float64" and batch == (1 if name.endswith("-sample") else 32)


@pytest.mark.parametrize(*grid(fast_epoch, compiled_slow, name=impls.names(), net=list(NETS), opt=list(OPTIMIZERS),
                               batch=[1, 32], dtype=impls.DTYPES))
def test_one_epoch_parity(name, net, opt, batch, dtype):
    cls = implementation(name, dtype, batch)
    optimizer, momentum, lr = OPTIMIZERS[opt]
    x, y, order, params = _problem(net)
    want, want_loss = peer_reference(cls, net, opt, batch) or reference(net, opt, batch)
    impl = cls(NETS[net], params, lr=lr, batch_size=batch, dtype=dtype, optimizer=optimizer, momentum=momentum)
    loss = impl.train_epoch(x.astype(dtype), y, order)
    got = impl.get_params()
    err = impls.parity_error(got, want)
    assert err <= TOLERANCE[dtype], f"{name} {net} {opt} batch {batch} {dtype}: parameter error {err:.2e}"
    assert abs(loss - want_loss) <= TOLERANCE[dtype] * max(1.0, abs(want_loss))
    # training moved the weights well beyond the tolerance: the check can fail
    moved = max(impls.relative_error(W0, W) for (W0, _), (W, _) in zip(params, want))
    assert moved > 10 * TOLERANCE[dtype], f"the weights moved by {moved:.1e} only"
    assert all(W.dtype == np.dtype(dtype) and b.dtype == np.dtype(dtype) for W, b in got)


@pytest.mark.parametrize(*grid(lambda name, net, dtype: name in FAMILIES,
                               lambda name, net, dtype: name == "torch-compile" and (net, dtype) != ("relu", "float32"),
                               name=impls.names(), net=list(NETS), dtype=impls.DTYPES))
def test_step_zero_gradient(name, net, dtype):
    """One plain-SGD step on one batch: (p0 - p1) / lr is the implementation's gradient."""
    batch = 1 if sample_only(name) else 16
    cls = implementation(name, dtype, batch)
    x, y, order, params = _problem(net)
    idx = order[:batch]
    _, want = oracle.mean_loss_and_gradients(params, x[idx], y[idx], NETS[net].activation)
    lr = 1e-3
    impl = cls(NETS[net], params, lr=lr, batch_size=batch, dtype=dtype, optimizer="sgd")
    impl.train_epoch(x.astype(dtype), y, idx)
    p0 = [(W.astype(dtype).astype(np.float64), b.astype(dtype).astype(np.float64)) for W, b in params]
    got = [((W0 - W1) / lr, (b0 - b1) / lr) for (W0, b0), (W1, b1) in zip(p0, impl.get_params())]
    # float32: (p0 - p1) / lr cancels digits, so the gradient is held to 1e-2 there
    tol = 1e-6 if dtype == "float64" else 1e-2
    for k, ((gW, gb), (wW, wb)) in enumerate(zip(got, want), start=1):
        assert impls.relative_error(gW, wW) < tol, f"dW{k}: {impls.relative_error(gW, wW):.2e}"
        assert impls.relative_error(gb, wb) < tol, f"db{k}: {impls.relative_error(gb, wb):.2e}"


@pytest.mark.parametrize(*grid(lambda name, dtype: name in FAMILIES, name=impls.names(), dtype=impls.DTYPES))
def test_predict_proba_matches_reference_forward(name, dtype, fashion):
    from impls.oracle import sample_forward
    cls = implementation(name, dtype, cls_batch := (1 if sample_only(name) else 8))
    x, y, order, params = _problem("sigmoid")
    impl = cls(NETS["sigmoid"], params, lr=0.01, batch_size=cls_batch, dtype=dtype)
    proba = impl.predict_proba(x[:50].astype(dtype))
    want = np.array([sample_forward(params, xi, "sigmoid")[1][-1] for xi in x[:50]])
    assert proba.shape == (50, 10)
    assert impls.relative_error(proba, want) < TOLERANCE[dtype] * 10
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", impls.names())
def test_capabilities_are_declared_and_enforced(name):
    if AVAILABLE[name]:
        pytest.skip(f"{name}: {AVAILABLE[name]}")
    cls = impls.get(name)
    spec = NETS["sigmoid"]
    params = impls.init_params(spec, 0)
    if cls.batch_sizes == (1,):
        assert name.endswith("-sample")
        with pytest.raises(impls.ConfigError, match="batch size 1 only"):
            cls(spec, params, lr=0.1, batch_size=32)
    with pytest.raises(impls.ConfigError, match="learning rate"):
        cls(spec, params, lr=-1.0)
    with pytest.raises(impls.ConfigError, match="dtype"):
        cls(spec, params, lr=0.1, dtype="float16")
    with pytest.raises(impls.ConfigError, match="expected"):
        cls(spec, params[:-1], lr=0.1)


def test_torch_compile_without_a_cxx_compiler_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))                  # no c++ or g++ on it
    assert "apt-get install g++" in impls.get("torch-compile").unavailable_reason()


def test_registry():
    assert impls.names() == ["numpy-sample", "numpy-batch", "numba-sample", "numba-batch",
                             "torch-cpu", "torch-compile", "torch-cuda", "torch-cuda-graph", "torch-ddp", "sklearn-mlp",
                             "jax-cpu"]
    assert [n for n in impls.names() if impls.is_peer(n)] == list(impls.PEERS) == ["sklearn-mlp", "jax-cpu"]
    with pytest.raises(impls.UnknownImplementation, match="valid names: numpy-sample, numpy-batch"):
        impls.get("numpy-fast")
    assert AVAILABLE["numpy-sample"] is None and AVAILABLE["numpy-batch"] is None
    import torch
    if not torch.cuda.is_available():
        assert "no CUDA device" in AVAILABLE["torch-cuda"]
        assert "no CUDA device" in AVAILABLE["torch-cuda-graph"]


def test_init_params_is_deterministic_and_follows_the_scheme():
    spec = impls.NetSpec((784, 32, 32, 10))
    a, b = impls.init_params(spec, 5), impls.init_params(spec, 5)
    assert all(np.array_equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))
    W1 = a[0][0]
    assert abs(W1.std() - (1 / 784) ** 0.5) < 0.002           # homework: var 1/max(n_in, n_out)
    assert all(not bias.any() for _, bias in a)
    he = impls.init_params(impls.NetSpec((784, 256, 10), "relu"), 5, "he")
    assert abs(he[0][0].std() - (2 / 784) ** 0.5) < 0.002
    with pytest.raises(impls.ConfigError, match="init scheme"):
        impls.init_params(spec, 0, "lecun")


@pytest.mark.parametrize("dtype", impls.DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_numba_batch_rows_split_by_thread_hold_parity(threads, dtype):
    """From BLAS_FROM, numba-batch splits each batch's rows into one part per numba thread and
    sums the parts' gradients (impls/numba_batch.py). One part and two are held to the table, on
    an epoch whose last batch has one row, so that one of two parts has none."""
    import numba
    from impls import numba_batch
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba has {numba.config.NUMBA_NUM_THREADS} thread(s) here")
    cls = implementation("numba-batch", dtype, 32)
    x, y, order, params = _problem("relu")
    order = order[:31 * 32 + 1]
    want, _ = oracle.train_epoch(NETS["relu"], params, x, y, order, lr=1e-3, batch_size=32, optimizer="adam")
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        impl = cls(NETS["relu"], params, lr=1e-3, batch_size=32, dtype=dtype, optimizer="adam")
        impl.train_epoch(x.astype(dtype), y, order)
    finally:
        numba.set_num_threads(before)
    assert impl._split[0].shape[0] == numba_batch.parts_for(32, threads) == threads
    assert impls.parity_error(impl.get_params(), want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", impls.DTYPES)
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("batch", [8, 32])
def test_numba_batch_loop_and_blas_kernels_both_hold_parity(batch, opt, dtype):
    """numba-batch runs its loop kernel below BLAS_FROM and its BLAS kernel from it: each is
    held to the table at a batch size that picks it."""
    from impls import numba_batch
    assert (batch >= numba_batch.BLAS_FROM) == (batch == 32)
    cls = implementation("numba-batch", dtype, batch)
    optimizer, momentum, lr = OPTIMIZERS[opt]
    x, y, order, params = _problem("relu")
    want, _ = reference("relu", opt, batch)
    impl = cls(NETS["relu"], params, lr=lr, batch_size=batch, dtype=dtype, optimizer=optimizer, momentum=momentum)
    impl.train_epoch(x.astype(dtype), y, order)
    assert impls.parity_error(impl.get_params(), want) <= TOLERANCE[dtype]
