"""Shared fixtures. The real Fashion-MNIST files are required: CI installs them
(``apt-get install dataset-fashion-mnist``); a missing copy fails loudly instead of skipping."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fashion():
    from benchmarks import datasets
    try:
        return datasets.load("fashion-mnist")
    except datasets.DataError as exc:
        pytest.fail(f"the tests need the real Fashion-MNIST files:\n{exc}")


@pytest.fixture(scope="session")
def small(fashion):
    """1,000 real training samples in float64 and their labels."""
    return fashion.features("train", "float64", 1000), fashion.labels("train", 1000)


def run_cli(*args, cwd=None, env=None, timeout=600):
    """``python -m benchmarks ARGS`` in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=full_env, timeout=timeout)


# the harness's own definitions, so the tests hold implementations to exactly what it checks
from impls import parity_error as params_error, relative_error as rel_error  # noqa: E402,F401
