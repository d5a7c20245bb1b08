"""Time spent inside tracking calls, in this process: what tracking costs a session.

Every public function of ``tracking`` that talks to the store is wrapped in ``timed``; a call
made from inside another timed call is not counted twice. ``spent()`` is the running total of
the calling thread, read before and after a cell by ``benchmarks/session.py``: a fleet runs
several sessions at once, each in a thread of its own (``benchmarks/fleet.py``), and each
counts only its own calls.
"""
from __future__ import annotations

import functools
import threading
import time

_local = threading.local()
_lock = threading.Lock()
_by_name: dict[str, list] = {}       # function -> [seconds, calls]


def timed(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if getattr(_local, "inside", False):
            return func(*args, **kwargs)
        _local.inside = True
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            _local.inside = False
            _local.seconds = getattr(_local, "seconds", 0.0) + elapsed
            _local.calls = getattr(_local, "calls", 0) + 1
            with _lock:
                entry = _by_name.setdefault(func.__qualname__, [0.0, 0])
                entry[0] += elapsed
                entry[1] += 1
    return wrapper


def spent() -> tuple[float, int]:
    """(seconds, calls) spent in tracking calls by this thread so far."""
    return getattr(_local, "seconds", 0.0), getattr(_local, "calls", 0)


def breakdown() -> dict[str, dict]:
    """{function: {"seconds": s, "calls": n}} of every thread of this process, costliest first."""
    with _lock:
        items = sorted(_by_name.items(), key=lambda kv: -kv[1][0])
        return {name: {"seconds": round(sec, 4), "calls": n} for name, (sec, n) in items}
