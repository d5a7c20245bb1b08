"""pytest-benchmark suite: the time of one training step (one minibatch), per implementation,
dtype and batch size, on the hw1-q4 network and real Fashion-MNIST samples.

    pytest benchmarks/suite_train_step.py --benchmark-enable --benchmark-json=out.json

``python -m benchmarks bench`` runs it and logs the JSON to the session's MLflow run. Each
case is warmed up (JIT compile, first call) before pytest-benchmark's rounds start, and
implementations that cannot run here are skipped with their reason. Threads: ``$BPB_THREADS``
(a bench session sets it from its thread count), else ``threads.default_threads()``. Note: this suite runs all
backends in one process, so read its numbers as per-step latency, and the bench session's
isolated throughput cells for cross-backend comparisons.
"""

import numpy as np
import pytest

import impls
from benchmarks import datasets, threads
from benchmarks.config import PRESETS


def network_info(preset: str, config) -> dict:
    """The preset and network of a case, as the report's tables name them."""
    return {"preset": preset, "network": f"{'-'.join(map(str, config.sizes))} {config.activation}"}


@pytest.fixture(scope="module")
def data():
    try:
        return datasets.load("fashion-mnist")
    except datasets.DataError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("batch", [1, 32, 256, 1024], ids=lambda b: f"b{b}")
@pytest.mark.parametrize("dtype", impls.DTYPES)
@pytest.mark.parametrize("name", [n for n in impls.names() if n not in impls.OPT_IN])
def test_train_step(benchmark, data, name, dtype, batch):
    reason = impls.runnable(name, dtype=dtype, batch_size=batch)
    if reason:
        pytest.skip(reason)
    config = PRESETS["hw1-q4"].replace(impl=name, dtype=dtype, batch_size=batch)
    spec = impls.NetSpec(config.sizes, config.activation)
    params = impls.init_params(spec, config.seed, config.init)
    cls = impls.get(name)
    threads.pin_threads(threads.inherited())
    x = data.features("train", dtype, 4096)
    y = data.labels("train", 4096)
    net = cls(spec, params, lr=config.lr, batch_size=batch, dtype=dtype)
    steps = [np.arange(s, s + batch, dtype=np.int64) % len(x) for s in range(0, 64 * batch, batch)]
    net.train_epoch(x, y, steps[0])                 # warm-up: compile / first call
    it = iter(range(10 ** 9))
    benchmark.extra_info.update(impl=name, dtype=dtype, batch=batch, samples_per_round=batch,
                                **network_info("hw1-q4", config))
    benchmark(lambda: net.train_epoch(x, y, steps[next(it) % len(steps)]))
