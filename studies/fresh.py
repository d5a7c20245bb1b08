"""The lab's one way to measure in a fresh process, and its one busy loop.

``run("studies.family_worker:measure", {...})`` starts ``python -m studies.fresh``, which imports
the module, calls the function with the keyword arguments, and prints its dict as JSON on a line
of its own after ``RESULT ``; the parent returns that dict, or ``{"error": ...}`` when the child
printed none (it crashed, timed out). A subprocess and not ``multiprocessing``'s spawn (which
``benchmarks/workers.py`` uses for a session's cells): the thread settings and ``XLA_FLAGS`` a
study varies are read when a library is first imported, so they go in the child's environment,
and the child must start with nothing else imported.

``busy(n)``: ``n`` processes spinning a core each, for a measurement "beside a busy machine".
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "RESULT "


def run(target: str, kwargs: dict, env: dict | None = None, timeout: float = 600) -> dict:
    """``module:function(**kwargs)`` (a JSON-able dict in, a JSON-able dict out) in a fresh
    process whose environment is this one's updated with ``env``."""
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, "-m", "studies.fresh", json.dumps({"target": target, "kwargs": kwargs})],
                              cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX):])
    return {"error": f"{target} exited {done.returncode} without a result: {done.stderr.strip()[-500:]}"}


@contextlib.contextmanager
def busy(n: int = 1, settle: float = 0.2):
    """``n`` busy-loop processes for the duration of the block (0: none), spinning before it starts."""
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        if spin:
            time.sleep(settle)
        yield spin
    finally:
        for s in spin:
            s.kill()
            s.wait()


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    module, func = job["target"].split(":")
    out = getattr(importlib.import_module(module), func)(**job["kwargs"])
    print(PREFIX + json.dumps(out, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
