"""The machine inventory recorded with every result: CPU, BLAS and its threads, the thread
environment, versions, git commit, and the GPU (``benchmarks/gpu.py``)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata

from benchmarks import gpu

# the test hook that breaks or slows an implementation in every worker (benchmarks/workers.py):
# a session run with it set records it, so that compare names it among what differs
FAULT_ENV = "BPB_FAULT"

# every environment variable that changes a thread pool's behaviour starts with one of these
THREAD_ENV_KEYS = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "NUMBA_THREADING_LAYER", "NUMBA_NUM_THREADS",
                   "XLA_FLAGS")


def thread_env(environ=os.environ) -> dict:
    """Every environment setting that changes a thread pool's behaviour."""
    return {k: environ[k] for k in sorted(environ) if k.startswith(THREAD_ENV_KEYS)}


# the thread variables this process started with, before a library set its own in it (importing
# scikit-learn sets KMP_*, pinning jax sets XLA_FLAGS); imported by the CLI before either
STARTED_WITH = thread_env()


def blas_info() -> list[dict]:
    """threadpoolctl's view of every BLAS/OpenMP library loaded: which, version, kernel, threads."""
    from threadpoolctl import threadpool_info
    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer", "prefix")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


def thread_settings() -> dict:
    # sorted: threadpoolctl lists the libraries in the order they were loaded, which changes
    # from run to run, and a recorded setting must not
    out = {"blas": ";".join(sorted(f"{b['internal_api']}:{b['num_threads']}" for b in blas_info()
                                   if b["user_api"] == "blas"))}
    if "numba" in sys.modules:
        import numba
        out["numba"] = numba.get_num_threads()
    if "torch" in sys.modules:
        import torch
        out["torch"] = torch.get_num_threads()
    if "impls.jax_cpu" in sys.modules:
        out["jax"] = sys.modules["impls.jax_cpu"]._THREADS["setting"]
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(cwd: str | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=cwd or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        commit = out.stdout.strip()
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5, cwd=cwd).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def inventory() -> dict:
    """Flat str -> str description of this machine and software, for tags and JSON."""
    blas = [b for b in blas_info() if b["user_api"] == "blas"]
    inv = {
        "cpu_model": _cpu_model(),
        "cpu_cores": str(os.cpu_count()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # sorted, as in thread_settings: one machine, one identity, whatever the load order
        "blas": "; ".join(sorted(f"{b['internal_api']} {b['version']} {b['architecture']} threads={b['num_threads']}"
                                 for b in blas)) or "unknown",
        "openblas_env": " ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("OPENBLAS_")) or "unset",
        "thread_env": " ".join(f"{k}={v}" for k, v in thread_env().items()) or "unset",
        "git_commit": git_commit(),
    }
    for pkg in ("numpy", "numba", "torch", "mlflow", "pandas"):
        inv[f"version_{pkg}"] = _version(pkg)
    inv.update({f"threads_{k}": str(v) for k, v in thread_settings().items()})
    inv.update(gpu.inventory())      # gpu, its memory, compute capability, driver and CUDA versions
    if os.environ.get(FAULT_ENV):    # absent otherwise: sessions from before it was recorded compare equal
        inv["fault_hook"] = os.environ[FAULT_ENV]
    return inv
