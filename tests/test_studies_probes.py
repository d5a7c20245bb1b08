"""The two probes (studies/threads_probe.py, studies/contention_probe.py) measure through
studies.fresh: one tiny real measurement each, in its fresh process, comes back as numbers."""
import pytest

from studies import contention_probe, threads_probe

pytestmark = pytest.mark.integration      # each probe measures in fresh processes


def test_contention_probe_measures_one_case_in_a_fresh_process():
    rate = contention_probe.in_process(("numpy-batch t1", "numpy-batch", 1, {}), seconds=0.01)
    assert rate > 0


def test_threads_probe_measures_one_implementation_in_a_fresh_process(monkeypatch):
    monkeypatch.setattr(threads_probe, "CASES", [("numpy-batch", 32)])     # the parent's loop only
    rates = threads_probe.in_processes(rounds=1, seconds=0.01)
    assert set(rates) == {("numpy-batch", 32, "-", 1), ("numpy-batch", 32, "-", 2)}
    assert all(v > 0 for v in rates.values())
