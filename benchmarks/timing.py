"""Timed work: throughput passes and paired timing against the reference (the peak-GEMM
probe is in ``benchmarks/peaks.py``).

A throughput figure is samples/s over ``repeats`` passes of a fixed number of samples; the
length of a pass is calibrated, untimed, so that one pass takes about ``seconds``. With
``paired``, the reference (numpy-sample) is timed in passes alternating with the measured ones,
in the same process at the same moment: machine drift cancels in their ratio, which is what the
regression gate compares (docs/performance.md: unpaired ratios swung 20x -> 39x between
sessions on one machine).
"""
from __future__ import annotations

import math
import time


import impls
from benchmarks.config import Diverged
from benchmarks.runner import Prepared, epoch_order, loss_diverged


class Timed:
    """One network timed over fixed-length passes of the training data."""

    def __init__(self, net, p: Prepared, seconds: float):
        self.net, self.p = net, p
        B = p.config.batch_size
        probe = min(len(p.x), max(4 * B, 256))
        net.warm_up(p.x, p.y)
        net.sync()
        t0 = time.perf_counter()
        net.train_epoch(p.x, p.y, epoch_order(len(p.x), p.config.seed, 0, True)[:probe])
        rate = probe / max(time.perf_counter() - t0, 1e-9)
        self.n = int(min(len(p.x), max(B, math.ceil(rate * seconds / B) * B)))

    def rate(self, repeat: int) -> float:
        """Samples/s of one pass; Diverged if its loss blew up."""
        p = self.p
        order = epoch_order(len(p.x), p.config.seed, repeat, True)[:self.n]
        return self.n / timed_epoch(self.net, p, order, f"throughput repeat {repeat}")


def timed_epoch(net, p: Prepared, order, where: str) -> float:
    """Seconds of one pass of ``net`` over ``order``; Diverged (naming ``where``) if its loss blew up."""
    net.sync()                     # a GPU's queue is empty before the clock starts and after it stops
    t0 = time.perf_counter()
    loss = net.train_epoch(p.x, p.y, order)
    net.sync()
    seconds = time.perf_counter() - t0
    if loss_diverged(loss, p.spec.sizes[-1]):
        raise Diverged(f"{p.config.impl} diverged in {where}: loss {loss:.4g}")
    return seconds


def measure_throughput(p: Prepared, repeats: int, seconds: float, reference: Prepared | None = None,
                       on_repeat=None, ready=None, go_on=None) -> tuple[list[float], list[float]]:
    """Samples/s of ``repeats`` timed passes and, with a prepared ``reference``, the
    reference's samples/s in passes alternating with them. ``on_repeat(r, seconds, rate)`` is
    called after each (outside the timed region); ``ready()`` once, after the untimed warm-up
    and calibration, before the first timed pass (a worker waits there for its tracking writes);
    ``go_on(r)`` False after repeat ``r`` stops early (the cell budget, ``benchmarks/budget.py``)."""
    timed = Timed(p.new(), p, seconds)
    ref = Timed(reference.new(), reference, seconds) if reference is not None else None
    if ready is not None:
        ready()
    rates, ref_rates = [], []
    for r in range(1, repeats + 1):
        t0 = time.perf_counter()
        if ref is not None:
            ref_rates.append(ref.rate(r))
        rates.append(timed.rate(r))
        if on_repeat is not None:
            on_repeat(r, time.perf_counter() - t0, rates[-1])
        if go_on is not None and r < repeats and not go_on(r):
            break
    return rates, ref_rates


def reference_config(p: Prepared):
    """The configuration a paired measurement times beside ``p``: numpy-sample at batch 1."""
    return p.config.replace(impl=impls.SPEEDUP_BASE, batch_size=1)
