"""backprop-bench implementations: the contract, the registry and the shared initialisation.

Every implementation trains the same network (a ``NetSpec``: layer sizes and activation,
softmax and cross-entropy at the end; impls/base.py) and exchanges parameters as
a list of ``(W, b)`` numpy pairs, ``W`` shaped ``(n_in, n_out)``, ``b`` shaped ``(n_out,)``::

    import impls
    spec = impls.NetSpec((784, 32, 32, 10), "sigmoid")
    params = impls.init_params(spec, seed=0, scheme="homework")
    net = impls.get("numpy-batch")(spec, params, lr=0.1, batch_size=32, dtype="float32")
    loss = net.train_epoch(x, y, order)        # one epoch over x[order]
    proba = net.predict_proba(x_test)          # (n, 10)

Importing this package loads numpy only: the registry maps names to ``"module:Class"`` strings
and imports a backend (numba, torch) the first time one of its implementations is asked for.
"""
from __future__ import annotations

import importlib

from impls.base import (
    ACTIVATIONS,
    DTYPES,
    INIT_SCHEMES,
    OPTIMIZERS,
    PARITY_TOLERANCE,
    ConfigError,
    Implementation,
    NetSpec,
    flops_per_sample,
    init_params,
    parity_error,
    relative_error,
)

__all__ = [
    "ACTIVATIONS", "DTYPES", "INIT_SCHEMES", "OPTIMIZERS", "OPT_IN", "PARITY_TOLERANCE", "PEERS", "SPEEDUP_BASE", "ConfigError",
    "Implementation", "NetSpec", "UnknownImplementation", "available", "flops_per_sample", "get", "init_params",
    "is_peer", "names", "parity_error", "relative_error", "runnable",
]

# name -> "module:Class"; the order is the order of every table and figure.
_REGISTRY = {
    "numpy-sample": "impls.numpy_sample:NumpySample",
    "numpy-batch": "impls.numpy_batch:NumpyBatch",
    "numba-sample": "impls.numba_sample:NumbaSample",
    "numba-batch": "impls.numba_batch:NumbaBatch",
    "torch-cpu": "impls.torch_impl:TorchCPU",
    "torch-compile": "impls.torch_compile:TorchCompile",
    "torch-cuda": "impls.torch_cuda:TorchCUDA",
    "torch-cuda-graph": "impls.torch_cuda:TorchCUDAGraph",
    "torch-ddp": "impls.torch_ddp:TorchDDP",
    # peers: what a user would pick instead of writing the network (scikit-learn, JAX); optional
    # backends, installed by requirements.txt; each class says ``family = "peer"``
    "sklearn-mlp": "impls.sklearn_mlp:SklearnMLP",
    "jax-cpu": "impls.jax_cpu:JaxCPU",
}
# the peers' names: scheduled on PEER_PRESETS only (benchmarks/plan.py), kept out of the
# regression gate, and shown in the report's Peers section (reports/peers.py)
PEERS = ("sklearn-mlp", "jax-cpu")

# run only where named (``--impl torch-ddp``, or ``all``): not in the default matrices, the gate or
# the pytest-benchmark suite. torch-ddp starts a process per rank, and on the per-sample preset it
# would time an all-reduce per sample; torch-compile compiles each configuration for seconds
# (docs/performance.md, "torch.compile")
OPT_IN = ("torch-ddp", "torch-compile")

# the implementation every speed-up divides by (samples/s over its samples/s, same network, dtype
# and session); logged to MLflow as ``speedup_vs_reference``, a name kept for old sessions' sake
SPEEDUP_BASE = "numpy-sample"


class UnknownImplementation(KeyError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown implementation {self.name!r}; valid names: {', '.join(_REGISTRY)}"


def names() -> list[str]:
    """Every registered implementation name, available here or not."""
    return list(_REGISTRY)


def is_peer(name: str) -> bool:
    """A peer (scikit-learn, JAX) rather than one of the project's families; no import."""
    return name in PEERS


def get(name: str) -> type[Implementation]:
    """The class registered under ``name``; imports its backend module on first use.

    A backend that is not installed raises ImportError here; ``available()`` reports it
    as a reason instead.
    """
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UnknownImplementation(name) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def available() -> dict[str, str | None]:
    """``{name: None}`` for implementations that can run here, else ``{name: reason}``."""
    return {name: available_reason(name) for name in _REGISTRY}


def runnable(name: str, *, dtype: str, batch_size: int) -> str | None:
    """The one answer to "can ``name`` run this configuration here?": None, or why not
    (backend missing, no device, dtype or batch size unsupported). Every planner, the CLI,
    the pytest-benchmark suite and the tests ask this."""
    reason = available_reason(name)
    return f"{name}: {reason}" if reason else get(name).supports(dtype=dtype, batch_size=batch_size)


_AVAILABLE: dict[str, str | None] = {}


def available_reason(name: str) -> str | None:
    """``available()[name]``, computed once per process (a CUDA probe is not free)."""
    if name not in _AVAILABLE:
        try:
            _AVAILABLE[name] = get(name).unavailable_reason()
        except ImportError as exc:  # the backend is not installed: say which one
            _AVAILABLE[name] = f"cannot import its backend: {exc}"
    return _AVAILABLE[name]
