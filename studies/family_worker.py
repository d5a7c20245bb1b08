"""One measurement of ``python -m studies families``, alone in a fresh process.

    studies.fresh.run("studies.family_worker:run_job", {"job": {"name": "numpy-batch", ...}})

The parent (``studies/families.py``) runs one of these per measurement, so that no other
backend's thread pool, JIT cache or allocator state is alive beside it. The worker builds the
contender (a registered implementation, ``impls.get``, or a family's yardstick,
``studies.yardsticks.get``), pins its threads, warms it up (an untimed first call: numba
compiles, torch starts), then times ``PASSES`` passes of the training data of about
``seconds / PASSES`` each (``benchmarks.timing.Timed``, as a bench session's throughput cells
are timed) and returns a dict: samples/s (the median pass), the passes,
``peak_rss_mb`` (this process's peak resident memory) and the 1-minute load average before
and after. A contender that cannot run here answers ``{"unavailable": reason}``.

Modes besides ``throughput``: ``adam`` also times every optimizer step of the timed passes
(``adam_share``: their time over the epoch's), ``probe`` runs the peak probe once (one
"session" of it).
"""
from __future__ import annotations

import math
import resource
import time
import traceback

import numpy as np

from benchmarks.cells import load_average    # as a session's cells read it (imports no backend)

PASSES = 5


def resolve_threads(threads) -> tuple[int, str]:
    """The contest's thread count: a number, or "default": the harness's default setting."""
    if threads != "default":
        return int(threads), "the contest's"
    from benchmarks.threads import default_threads
    return default_threads()


def yardstick_kind(name: str) -> str:
    from studies import yardsticks
    return yardsticks.KINDS[name]


def contender_class(name: str, source: str):
    """(class, None), or (None, why it cannot run here)."""
    if source == "ref":
        from studies import yardsticks
        why = yardsticks.reason(name)
        return (None, why) if why else (yardsticks.get(name), None)
    import impls
    if name not in impls.names():
        return None, f"{name} is not registered in impls (impls/__init__.py)"
    why = impls.available_reason(name)
    return (None, why) if why else (impls.get(name), None)


def time_step(net) -> tuple[list[float], str] | None:
    """Wrap the optimizer step so that each call adds its seconds to the list returned."""
    site = net.optimizer_step_site()
    if site is None:
        return None
    owner, attr = site
    label = f"{type(owner).__name__}.{attr}"
    inner, spent = getattr(owner, attr), [0.0]

    def step(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0
    setattr(owner, attr, step)       # an instance attribute: shadows the method for this object only
    return spent, label


def probe(out: dict) -> dict:
    from benchmarks import peaks
    p = peaks.peak_probe(dtype="float32")
    out.update(value=p.peak, numpy_median=p.numpy_median, torch_median=p.torch_median, spread=p.spread,
               how="benchmarks.peaks.peak_probe(dtype='float32')")
    return out


def measure(job: dict) -> dict:
    from benchmarks import datasets
    from benchmarks.threads import pin_threads
    out = {"load_before": load_average()}
    threads, why = resolve_threads(job.get("threads", 1))
    out.update(threads=threads, threads_reason=why)
    if job.get("mode") == "probe":
        pin_threads(threads)
        return probe(out)
    cls, reason = contender_class(job["name"], job.get("source", "impl"))
    if cls is None:
        return {"unavailable": reason}
    import impls
    from benchmarks.config import PRESETS
    from benchmarks.runner import Prepared, epoch_order, prepare
    from benchmarks.timing import Timed
    config = PRESETS[job["preset"]].replace(impl=job["name"], dtype=job.get("dtype") or PRESETS[job["preset"]].dtype)
    reason = cls.supports(dtype=config.dtype, batch_size=config.batch_size)
    if reason:
        return {"unavailable": reason}
    out["thread_settings"] = pin_threads(threads)
    data = datasets.load(config.dataset, job.get("data_dir"))
    if job.get("source") == "ref" and yardstick_kind(job["name"]) == "floor":     # trains nothing: no parity
        spec = impls.NetSpec(config.sizes, config.activation)
        p = Prepared(config, cls, spec, impls.init_params(spec, config.seed, config.init),
                     data.features("train", config.dtype), data.labels("train"), math.nan, math.nan)
    else:
        p = prepare(config, data, cls)
        if not p.parity_max_error <= impls.PARITY_TOLERANCE[config.dtype]:
            return {"error": f"{job['name']} fails one-step parity: max relative error {p.parity_max_error:.3g}"}
    out["parity_max_error"] = p.parity_max_error
    net, x, y = p.new(), p.x, p.y
    t0 = time.perf_counter()
    net.warm_up(x, y)
    net.train_epoch(x, y, epoch_order(len(x), config.seed, 0, True)[:max(4 * config.batch_size, 256)])
    net.sync()
    out["first_call_seconds"] = time.perf_counter() - t0
    timer = time_step(net) if job.get("mode") == "adam" else None
    if job.get("mode") == "adam" and timer is None:
        return {"unavailable": f"{cls.__name__}.optimizer_step_site() is None: its optimizer step is not a "
                               f"call of its own to time"}
    timed = Timed(net, p, job["seconds"] / PASSES)
    if timer is not None:
        timer[0][0] = 0.0            # the calibration pass's steps are not in the timed passes
    rates = [timed.rate(r) for r in range(1, PASSES + 1)]
    out.update(samples_per_second=float(np.median(rates)), rates=rates, samples_per_pass=timed.n,
               details=net.details())
    if timer is not None:
        spent, label = timer
        out.update(adam_share=spent[0] / sum(timed.n / r for r in rates), adam_step=label)
    return out


def run_job(job: dict) -> dict:
    """``measure(job)`` with its process's peak memory and load average, an error as a result
    (the lab runs it in a fresh process: ``studies.fresh.run("studies.family_worker:run_job", ...)``)."""
    try:
        out = measure(job)
    except Exception as exc:  # noqa: BLE001 -- reported to the parent as this measurement's error
        out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    out["load_after"] = load_average()
    return out
