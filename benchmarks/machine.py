"""The old names the lab's modules (families, probes) still import: threads and pinning are in
``benchmarks/threads.py``, the inventory in ``benchmarks/inventory.py``. Delete this file once
those modules import from there."""
from benchmarks.inventory import inventory
from benchmarks.threads import default_threads, pin_threads, set_worker_env

__all__ = ["default_threads", "inventory", "pin_threads", "set_worker_env"]
