"""Shared fixtures. The real Fashion-MNIST files are required: CI installs them
(``apt-get install dataset-fashion-mnist``); a missing copy fails loudly instead of skipping."""
from __future__ import annotations

import pytest


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
