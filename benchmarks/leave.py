"""How a process of this project ends once its work is done: ``leave``, the exit of a command
(benchmarks/__main__.py) and of a worker that has sent everything (benchmarks/workers.py)."""
from __future__ import annotations

import atexit
import os
import sys
import threading


def leave(code) -> None:
    """Exit as ``sys.exit(code)`` does, less the interpreter's teardown. Everything of a normal
    exit that can keep or lose a result still runs, in its order: ``threading``'s exit hooks run
    and the threads that are not daemons are joined, the atexit handlers run (multiprocessing's,
    logging's, MLflow's, torch-ddp's that stops its ranks, every ``weakref.finalize``), the output
    is flushed. What is skipped is freeing every module and object one by one: 1.2 s of CPU after
    a session with torch, numba and mlflow loaded, on the 2-core Zen 2 of docs/performance.md
    (0.04 s this way). Under a profiler or a tracer (``python -m cProfile -m benchmarks``, a
    debugger) the exit is the usual one, so that they can write what they found afterwards."""
    shutdown = getattr(threading, "_shutdown", None)      # what CPython's exit calls first
    if shutdown is None or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    # threading's own exit hooks first (they tell concurrent.futures thread pools to stop), then
    # every thread that is not a daemon joined: joined without those hooks, a pool's idle worker
    # is waited for forever (tests/test_cli.py)
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):    # a closed pipe: nothing more can reach it
            pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
