"""The contract every implementation follows, and the pieces all of them share.

Only numpy is imported here. Shapes: ``x`` is ``(n, n0)`` in the run's dtype, scaled to
[0, 1]; ``y`` is ``(n,)`` integer labels; ``order`` is a permutation (or any index array)
saying which samples the epoch visits, in which order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

ACTIVATIONS = ("sigmoid", "relu")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam")
INIT_SCHEMES = ("homework", "xavier", "he")

# Parity with the float64 reference: max |got - ref| / max |ref| per parameter array, after
# one epoch of ~1,000 steps from the same init and order. Measured worst cases: float64
# 9.7e-14, float32 1.7e-4 (momentum SGD at batch 1 amplifies float32 rounding). A real math
# error (a wrong bias gradient, an lr off by 1%) lands at 1e-2 or more.
PARITY_TOLERANCE = {"float64": 1e-9, "float32": 1e-3}


def relative_error(a, b) -> float:
    """max |a - b| / max |b| over one array: relative to the array's scale, not elementwise
    (an all-zero reference falls back to max |a|)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a).max())


def parity_error(got, want) -> float:
    """The quantity PARITY_TOLERANCE bounds: the worst ``relative_error`` over every W and b."""
    return max(relative_error(g, w) for gp, wp in zip(got, want) for g, w in zip(gp, wp))


class ConfigError(ValueError):
    """A configuration an implementation cannot run; the message says which option."""


@dataclass(frozen=True)
class NetSpec:
    sizes: tuple[int, ...]          # (n0, n1, ..., nL): input, hidden layers, classes
    activation: str = "sigmoid"     # hidden-layer activation; the output is always softmax

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"layer sizes must be at least two positive integers, got {self.sizes}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        object.__setattr__(self, "sizes", sizes)

    @property
    def layers(self) -> list[tuple[int, int]]:
        """``[(n_in, n_out), ...]`` for each weight matrix."""
        return list(zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in self.layers)


def init_params(spec: NetSpec, seed: int, scheme: str = "homework") -> list[tuple[np.ndarray, np.ndarray]]:
    """Float64 initial parameters; W1 is drawn first, then W2, ... Biases start at zero.

    homework: W ~ N(0, 1/max(n_in, n_out)), the assignment's rule;
    xavier:   W ~ N(0, 2/(n_in + n_out));  he: W ~ N(0, 2/n_in).
    """
    variance = {
        "homework": lambda i, o: 1.0 / max(i, o),
        "xavier": lambda i, o: 2.0 / (i + o),
        "he": lambda i, o: 2.0 / i,
    }
    if scheme not in variance:
        raise ConfigError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(0.0, math.sqrt(variance[scheme](i, o)), size=(i, o)), np.zeros(o))
        for i, o in spec.layers
    ]


def flops_per_sample(spec: NetSpec) -> int:
    """Floating-point operations of one training sample, forward plus backward.

    Each (n_in, n_out) layer costs 2*n_in*n_out forward and as much again for its weight
    gradient; every layer but the first also propagates the gradient to its input
    (2*n_in*n_out). The gradient with respect to the image itself is never computed.
    Elementwise work (activations, softmax, the optimizer) is not counted.
    """
    macs = [i * o for i, o in spec.layers]
    return 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])


class Implementation:
    """Base class: stores and validates the configuration; subclasses own the math.

    Capability flags tell the harness and the tests what to skip, with a reason:
    ``dtypes``, ``batch_sizes`` (None: any), ``needs_gpu``, ``takes_tf32`` (the ``tf32``
    option: CUDA float32 matmuls in TensorFloat-32; refused by every other implementation).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    dtypes: ClassVar[tuple[str, ...]] = DTYPES
    batch_sizes: ClassVar[tuple[int, ...] | None] = None
    needs_gpu: ClassVar[bool] = False
    takes_tf32: ClassVar[bool] = False
    # takes the ``world_size`` option (its ranks: torch-ddp); refused by every other implementation
    takes_world_size: ClassVar[bool] = False
    device: ClassVar[str] = "cpu"
    # runs on one thread whatever the session's count (its roofline divides by a 1-thread peak,
    # benchmarks/cells.py one_thread); None: inferred, True for batch_sizes == (1,)
    single_threaded: ClassVar[bool | None] = None

    def __init__(self, spec: NetSpec, params, *, lr: float, batch_size: int = 1,
                 dtype: str = "float64", optimizer: str = "sgd", momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, tf32: bool = False,
                 world_size: int | None = None):
        reason = self.supports(dtype=dtype, batch_size=batch_size)
        if reason:
            raise ConfigError(reason)
        if tf32 and not (self.takes_tf32 and dtype == "float32"):
            raise ConfigError(f"tf32 applies to float32 on a CUDA implementation (torch-cuda, torch-cuda-graph), "
                              f"not to {self.name} in {dtype}")
        if world_size is not None and not self.takes_world_size:
            raise ConfigError(f"world size applies to torch-ddp, not to {self.name}")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"learning rate must be a positive number, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        check_params(spec, params)
        self.spec = spec
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.dtype = np.dtype(dtype)
        self.optimizer = optimizer
        self.momentum = float(momentum)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.tf32 = bool(tf32)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this implementation cannot run on this machine, or None."""
        return None

    @classmethod
    def supports(cls, *, dtype: str, batch_size: int) -> str | None:
        """Why this implementation cannot run this configuration, or None."""
        if dtype not in cls.dtypes:
            return f"{cls.name} supports dtype {', '.join(cls.dtypes)}, not {dtype!r}"
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            return f"batch size must be a positive integer, got {batch_size!r}"
        if cls.batch_sizes is not None and batch_size not in cls.batch_sizes:
            allowed = ", ".join(map(str, cls.batch_sizes))
            return f"{cls.name} takes batch size {allowed} only, not {batch_size}"
        return None

    def train_epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray) -> float:
        """Train over ``x[order]`` once; return the mean training loss over those samples,
        each sample's loss taken before the update its batch makes."""
        raise NotImplementedError

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(n, n_classes)``."""
        raise NotImplementedError

    def get_params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """A copy of the current parameters as numpy ``(W, b)`` pairs in the run dtype."""
        raise NotImplementedError

    def optimizer_step_site(self) -> tuple[object, str] | None:
        """Where ``train_epoch`` applies one optimizer step: ``(owner, attribute)`` such that
        ``getattr(owner, attribute)`` is the callable it calls once per batch, looked up at each
        call, so a study may wrap it for one object (``setattr(owner, attribute, wrapper)``) and
        time or count the steps (studies/family_worker.py). Default None: the step is fused into
        a kernel, or not a call of its own."""
        return None

    # Hooks the harness calls around its timers; the defaults suit every CPU implementation.
    def warm_up(self, x: np.ndarray, y: np.ndarray) -> None:
        """One-off work before the first timed epoch (a CUDA graph's capture), leaving the
        parameters and optimizer state as they were. Default: nothing."""

    def sync(self) -> None:
        """Wait until the device has finished the work queued so far. Default: nothing (a
        CPU implementation finishes its work before ``train_epoch`` returns)."""

    def details(self) -> dict[str, str]:
        """Choices the implementation made for itself that a result depends on (which
        optimizer kernel, a capture time): a float becomes the metric ``impl_<key>``, anything
        else the param and the tag ``impl.<key>`` (benchmarks/cells.py)."""
        return {}


def check_params(spec: NetSpec, params) -> None:
    if len(params) != len(spec.layers):
        raise ConfigError(f"expected {len(spec.layers)} (W, b) pairs for sizes {spec.sizes}, got {len(params)}")
    for k, ((W, b), (i, o)) in enumerate(zip(params, spec.layers), start=1):
        if np.shape(W) != (i, o) or np.shape(b) != (o,):
            raise ConfigError(f"layer {k}: expected W {(i, o)} and b {(o,)}, got {np.shape(W)} and {np.shape(b)}")
