"""The pytest-benchmark suite (``benchmarks/suite_train_step.py``) as part of a bench session:
run in a subprocess with the session's threads, its JSON attached to the session's run, kept
beside the report and in ``.benchmarks/`` (where ``pytest-benchmark compare`` looks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tracking
from benchmarks.threads import THREADS_ENV

ROOT = Path(__file__).resolve().parents[1]


def attach_pytest_benchmark(session: tracking.Session, out_dir: str, threads: int, quick: bool, log=print) -> None:
    """Run the pytest-benchmark suite in a subprocess, with the session's threads; log its JSON
    to the session. The JSON is this session's own (``out_dir/<session id>/``), also saved in
    ``.benchmarks/`` where ``pytest-benchmark compare`` finds it, and only a suite that passed
    is attached."""
    folder = Path(out_dir) / session.run_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pytest-benchmark.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks" / "suite_train_step.py"),
           "-v", "-p", "no:cacheprovider", "--benchmark-enable", f"--benchmark-json={path}",
           f"--benchmark-storage=file://{ROOT / '.benchmarks'}", f"--benchmark-save=bpb-{session.run_id[:8]}",
           "--benchmark-max-time=0.2", "--benchmark-min-rounds=5"]
    if quick:
        cmd += ["-k", "float32 and not b32 and not b1024"]      # batches 1 and 256 ("b1" would match b1024)
    log("pytest-benchmark suite: " + " ".join(cmd[2:]))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, THREADS_ENV: str(threads)})
    last = ""
    for line in proc.stdout:                 # one line per case as it ends: a long suite is not silent
        line = line.rstrip()
        if line.endswith(("PASSED", "SKIPPED", "FAILED", "ERROR")) or " PASSED " in line or " SKIPPED " in line:
            log("    " + line.split("::")[-1])
        if line.strip():
            last = line
    proc.wait()
    log("  " + (last.strip("= ") if last else f"exit {proc.returncode}"))
    if proc.returncode == 0 and path.exists():
        session.log_artifact(path, "pytest-benchmark")
        n = len(json.loads(path.read_text()).get("benchmarks", []))
        session.log(metrics={"pytest_benchmark_cases": n})
    else:
        session.log(tags={"bpb.pytest_benchmark": f"failed: exit {proc.returncode}"})
