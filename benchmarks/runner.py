"""The training loop, written once: prepare a configuration, then epochs, sample orders,
timing, evaluation.

An implementation owns what happens inside one epoch (``train_epoch``); everything around it
is here, so every implementation is timed and evaluated the same way:

1. ``prepare(config, data)``, once per cell: the class, the initial parameters and the arrays;
   the first-call cost, measured on a throwaway instance that trains two short slices (the first
   call's extra time over the second is ``compile_seconds``: numba JIT or cache load,
   torch/CUDA start-up); and one optimizer step checked against the float64 reference
   (``parity_max_error``);
2. ``train(prepared, data)``: each epoch's ``train_epoch`` is timed alone (evaluation
   excluded), and ``samples_per_second`` is the epoch's samples over that time;
3. after each epoch, test loss and accuracy; ``time_to_target_seconds`` is the training time
   summed up to the first epoch whose test accuracy reaches the target.

Throughput timing (repeated fixed-length passes) is in ``benchmarks/timing.py``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import impls
from benchmarks.config import Diverged, RunConfig
from benchmarks.datasets import Dataset


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    epoch_seconds: float
    samples_per_second: float


@dataclass
class RunResult:
    config: RunConfig
    epochs: list[EpochRecord] = field(default_factory=list)
    compile_seconds: float = float("nan")
    parity_max_error: float = float("nan")
    time_to_target_seconds: float | None = None
    status: str = "RUNNING"          # MLflow's words: FINISHED | FAILED (error says why)
    error: str | None = None
    final_proba: np.ndarray | None = None    # test-set probabilities after the last epoch

    @property
    def samples_per_second(self) -> float:
        """Median over the timed epochs (all of them are past the first call)."""
        rates = [e.samples_per_second for e in self.epochs]
        return float(np.median(rates)) if rates else float("nan")

    @property
    def final_accuracy(self) -> float:
        return self.epochs[-1].test_accuracy if self.epochs else float("nan")

    def to_dict(self) -> dict:
        return {
            "impl": self.config.impl,
            "status": self.status,
            "error": self.error,
            "config": asdict(self.config),
            "epochs": [asdict(e) for e in self.epochs],
            "summary": {
                "compile_seconds": self.compile_seconds,
                "parity_max_error": self.parity_max_error,
                "samples_per_second": self.samples_per_second,
                "test_accuracy": self.final_accuracy,
                "time_to_target_seconds": self.time_to_target_seconds,
            },
        }


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The samples epoch ``epoch`` (1-based) visits; the same for every implementation."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def evaluate(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of predicted probabilities."""
    p = np.clip(proba[np.arange(len(y)), y].astype(np.float64), 1e-300, None)
    return float(-np.log(p).mean()), float((proba.argmax(axis=1) == y).mean())


def loss_diverged(loss: float, n_classes: int) -> bool:
    """Non-finite, or far beyond the ln(C) of an untrained net: the run has blown up."""
    return not math.isfinite(loss) or loss > 50 * math.log(n_classes)


@dataclass
class Prepared:
    """A configuration made ready to run, once: what ``prepare`` measured and the arrays."""
    config: RunConfig
    cls: type
    spec: impls.NetSpec
    params: list
    x: np.ndarray                 # training features (run dtype) and labels
    y: np.ndarray
    compile_seconds: float
    parity_max_error: float
    details: dict = field(default_factory=dict)   # the implementation's own choices (Implementation.details)

    def new(self) -> impls.Implementation:
        """A fresh instance from the initial parameters."""
        return self.cls(self.spec, self.params, **impl_kwargs(self.config))

    @property
    def parity_ok(self) -> bool:
        return self.parity_max_error <= impls.PARITY_TOLERANCE[self.config.dtype]


def impl_kwargs(config: RunConfig) -> dict:
    kwargs = dict(lr=config.lr, batch_size=config.batch_size, dtype=config.dtype,
                  optimizer=config.optimizer, momentum=config.momentum, tf32=config.tf32)
    if config.world_size is not None:
        kwargs["world_size"] = config.world_size
    return kwargs


def prepare(config: RunConfig, data: Dataset, cls: type | None = None) -> Prepared:
    """Everything a cell needs before its timed work; ConfigError if it cannot run here.
    ``cls``: an implementation-contract class outside the registry (a study's yardstick)
    to prepare, parity-checked alike, instead of the registered ``config.impl``."""
    if cls is None:
        reason = impls.runnable(config.impl, dtype=config.dtype, batch_size=config.batch_size)
    else:
        reason = cls.unavailable_reason() or cls.supports(dtype=config.dtype, batch_size=config.batch_size)
    if reason:
        raise impls.ConfigError(reason if reason.startswith(config.impl) else f"{config.impl}: {reason}")
    cls = cls or impls.get(config.impl)
    spec = impls.NetSpec(config.sizes, config.activation)
    params = impls.init_params(spec, config.seed, config.init)
    x = data.features("train", config.dtype, config.train_limit)
    y = data.labels("train", config.train_limit)
    prepared = Prepared(config, cls, spec, params, x, y, float("nan"), float("nan"))
    prepared.compile_seconds = measure_first_call(prepared)
    prepared.parity_max_error, prepared.details = one_step_parity(prepared)
    return prepared


def measure_first_call(p: Prepared) -> float:
    """Seconds the first call costs beyond a steady one, on a throwaway instance."""
    probe = p.new()
    n = min(len(p.x), max(2 * p.config.batch_size, 64))
    order = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    probe.train_epoch(p.x, p.y, order)
    probe.predict_proba(p.x[:8])
    t1 = time.perf_counter()
    probe.train_epoch(p.x, p.y, order)
    probe.predict_proba(p.x[:8])
    t2 = time.perf_counter()
    return max((t1 - t0) - (t2 - t1), 0.0)


def one_step_parity(p: Prepared) -> tuple[float, dict]:
    """One optimizer step on one batch, against the float64 reference: max relative error
    (``impls.parity_error``, bounded by ``impls.PARITY_TOLERANCE``), and the instance's
    ``details()`` (a CUDA graph's capture time, measured in this step's first call)."""
    from impls import oracle
    c = p.config
    order = np.arange(min(c.batch_size, len(p.x)), dtype=np.int64)
    net = p.new()
    net.train_epoch(p.x, p.y, order)
    # an implementation whose math differs on purpose names the reference it follows
    # (sklearn-mlp's Adam: impls/sklearn_mlp.py ``parity_reference``)
    reference = getattr(p.cls, "parity_reference", None) or oracle.train_epoch
    want, _ = reference(p.spec, p.params, p.x.astype(np.float64), p.y, order, lr=c.lr,
                              batch_size=c.batch_size, optimizer=c.optimizer, momentum=c.momentum)
    return impls.parity_error(net.get_params(), want), net.details()


def train(p: Prepared, data: Dataset, on_epoch=None, keep_going=None) -> RunResult:
    """Run a prepared configuration to the end; ``on_epoch(result, record)`` is called after
    each epoch, and ``keep_going(result)``, when given, may end it early (a time budget:
    ``benchmarks/budget.py``). Raises Diverged (with the finished epochs) when the loss blows up."""
    config, spec = p.config, p.spec
    x, y = p.x, p.y
    x_test = data.features("test", config.dtype, config.test_limit)
    y_test = data.labels("test", config.test_limit)
    result = RunResult(config=config, compile_seconds=p.compile_seconds, parity_max_error=p.parity_max_error)
    net = p.new()
    net.warm_up(x, y)                      # a CUDA graph's capture, outside every timed epoch
    trained = 0.0
    for epoch in range(1, config.epochs + 1):
        order = epoch_order(len(x), config.seed, epoch, config.shuffle)
        net.sync()
        t0 = time.perf_counter()
        train_loss = net.train_epoch(x, y, order)
        net.sync()
        seconds = time.perf_counter() - t0
        if loss_diverged(train_loss, spec.sizes[-1]):
            result.status = "FAILED"
            result.error = (f"{config.impl} diverged in epoch {epoch}: training loss {train_loss:.4g} "
                            f"(lr {config.lr} with {config.optimizer}, batch {config.batch_size}); "
                            "lower the learning rate")
            raise Diverged(result.error, result)
        trained += seconds
        proba = net.predict_proba(x_test)
        test_loss, acc = evaluate(proba, y_test)
        record = EpochRecord(epoch, float(train_loss), test_loss, acc, seconds, len(order) / seconds)
        result.epochs.append(record)
        if result.time_to_target_seconds is None and acc >= config.target_accuracy:
            result.time_to_target_seconds = trained
        result.final_proba = proba
        if on_epoch:
            on_epoch(result, record)
        if keep_going is not None and not keep_going(result):
            break
    result.status = "FINISHED"
    return result
