"""A time budget per cell: an accuracy cell that would train longer than ``--cell-budget``
seconds trains on fewer samples, and one that still runs over stops after the epoch that
crossed it; a throughput cell times as many repeats as fit (at least ``MIN_REPEATS``), and
stops early if they run over. Either way it is recorded (tag ``bpb.budget``) and the report
flags it: a loaded machine makes a 3-minute cell take 30, and nothing may silently take that long.

The projection is measured, not guessed, and in steady state: a throwaway instance first runs
its ``warm_up`` (a JIT's compile of every program an epoch calls, a CUDA graph's capture, the data
put on the device) and one untimed call, as the cell's own instance does before its first timed
epoch; then it trains on growing slices of whole batches until one takes ``CALIBRATE_SECONDS``,
and trains on that slice once more: the second time is the rate, so the first call of a new
length (a shape a JIT has not seen) never counts. Its rate times the epochs is the cell's
projected training time. A projection from a first call cut jax-cpu's hw1-q3 cell to 17,664 of
60,000 samples: its compile read as 600-800 samples/s, against 60-120k in steady state.
"""
from __future__ import annotations

import time
from dataclasses import replace

from benchmarks.runner import Prepared, epoch_order

CALIBRATE_SECONDS = 0.3
MIN_REPEATS = 3          # a throughput cell's fewest timed repeats, budget or not: a median and quartiles
SAFETY = 1.25            # evaluation after each epoch, and the rate a loaded machine drifts to


def measured_rate(p: Prepared) -> float:
    """Steady-state training samples/s of ``p``'s implementation here and now, on a throwaway
    instance, past its warm-up and first call (the module's header)."""
    net = p.new()
    net.warm_up(p.x, p.y)
    B = p.config.batch_size
    order = epoch_order(len(p.x), p.config.seed, 0, True)
    n = _whole_batches(max(B, 64), B, len(p.x))
    _timed_call(net, p, order[:n])                       # untimed: a first call's one-off work
    while True:
        seconds = _timed_call(net, p, order[:n])
        if seconds >= CALIBRATE_SECONDS or n >= len(p.x):
            return n / max(_timed_call(net, p, order[:n]), 1e-9)     # this length again, now seen
        n = _whole_batches(max(n * 2, int(n * CALIBRATE_SECONDS / max(seconds, 1e-6))), B, len(p.x))


def _whole_batches(n: int, B: int, total: int) -> int:
    """``n`` rounded down to whole batches (at least one), at most ``total``: a slice cut
    mid-batch would ask a JIT for a short last batch that the epoch never has."""
    return min(total, max(B, n // B * B))


def _timed_call(net, p: Prepared, order) -> float:
    """Seconds one ``train_epoch`` over ``order`` takes, the device's queue drained both sides."""
    net.sync()
    t0 = time.perf_counter()
    net.train_epoch(p.x, p.y, order)
    net.sync()
    return time.perf_counter() - t0


def fit(p: Prepared, budget: float | None) -> tuple[Prepared, dict]:
    """``p`` itself when its epochs fit in ``budget`` seconds, else ``p`` on the first N
    training samples such that they fit (at least one batch). Returns it with what was decided
    (``projected_seconds``, ``train_samples``, and ``note`` when samples were cut)."""
    if budget is None:
        return p, {}
    rate = measured_rate(p)
    epochs = p.config.epochs
    projected = SAFETY * epochs * len(p.x) / rate
    info = {"projected_seconds": projected, "train_samples": len(p.x)}
    if projected <= budget:
        return p, info
    B = p.config.batch_size
    n = int(max(B, min(len(p.x), budget * rate / (SAFETY * epochs)) // B * B))
    info.update(train_samples=n, note=f"trained on {n:,} of {len(p.x):,} samples per epoch: the full "
                                      f"{epochs} epoch(s) projected {projected:.0f} s at {rate:,.0f} samples/s "
                                      f"(steady state), over the {budget:g} s cell budget")
    return replace(p, x=p.x[:n], y=p.y[:n]), info


class Clock:
    """Whether another epoch still fits: ``runner.train``'s ``keep_going`` callback."""

    def __init__(self, budget: float | None):
        self.budget, self.start = budget, time.perf_counter()
        self.stopped: str | None = None

    def __call__(self, result) -> bool:
        if self.budget is None or not result.epochs:
            return True
        elapsed = time.perf_counter() - self.start
        last = elapsed / len(result.epochs)
        if elapsed + last <= self.budget or len(result.epochs) >= result.config.epochs:
            return True
        self.stopped = (f"stopped after epoch {len(result.epochs)} of {result.config.epochs}: {elapsed:.0f} s "
                        f"spent, another epoch would pass the {self.budget:g} s cell budget")
        return False


def fit_repeats(repeats: int, seconds: float, paired: bool, budget: float | None) -> tuple[int, str | None]:
    """How many timed repeats of about ``seconds`` each (twice that when ``paired`` with the
    speed-up base) fit in ``budget`` seconds, at least ``MIN_REPEATS``; and the note when
    that is fewer than ``repeats``."""
    each = seconds * (2 if paired else 1) * SAFETY
    if budget is None or repeats * each <= budget:
        return repeats, None
    fits = max(MIN_REPEATS, min(repeats, int(budget // each)))
    if fits >= repeats:
        return repeats, None
    return fits, (f"timed {fits} of {repeats} repeats: {repeats} projected {repeats * each:.0f} s at "
                  f"{each:.2g} s each, over the {budget:g} s cell budget")


def repeats_deadline(budget: float | None):
    """``measure_throughput``'s ``go_on(r)``: another repeat after ``r`` while the cell is within
    ``budget`` seconds of this call, made just before its warm-up (always at least ``MIN_REPEATS``)."""
    start = time.perf_counter()
    return lambda r: budget is None or r < MIN_REPEATS or time.perf_counter() - start < budget
