"""A cell's peak resident memory (``peak_rss_mb``): the high-water mark of its own process.

A worker process runs every cell of one implementation (``benchmarks/workers.py``), one after
the other, so the process's peak since it started would carry the earlier cells' peaks into the
later ones. Linux resets the high-water mark ``VmHWM`` of ``/proc/self/status`` to the current
resident size when "5" is written to ``/proc/self/clear_refs``: each cell resets it first, and
reads it last. Where that cannot be done (not Linux, or a kernel that refuses), the figure is
``getrusage``'s ``ru_maxrss``, the process's peak since it started, and the cell's tag
``bpb.peak_rss`` says so. Figures are MiB (2^20 bytes).
"""
from __future__ import annotations

import resource
import sys


def reset_peak_rss() -> str:
    """Reset this process's high-water mark; returns what ``peak_rss_mb`` will then mean."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        if _vmhwm_kib() is not None:
            return "this cell's own peak (VmHWM, reset when the cell started)"
    except OSError:
        pass
    return "the worker process's peak since it started (no reset here)"


def _vmhwm_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """The peak resident memory of this process in MiB: since the last ``reset_peak_rss`` where
    Linux allows it, else since the process started."""
    kib = _vmhwm_kib()
    if kib is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = maxrss / 1024 if sys.platform == "darwin" else maxrss      # bytes on macOS, KiB on Linux
    return kib / 1024
