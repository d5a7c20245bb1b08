"""Small statistics shared by the report, the harness and the regression gate.

numpy only (scipy is imported inside the test that needs it), so the gate and the timing code
can use these without loading pandas' plotting or matplotlib.
"""
from __future__ import annotations

import math

import numpy as np


def quartiles(values) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    q1, med, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(q1), float(med), float(q3)


def olympic_mean(values) -> float:
    """MLPerf-style: the mean after dropping the fastest and the slowest (with 3+ values);
    None and NaN are ignored; NaN when nothing is left."""
    v = sorted(x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x)))
    if not v:
        return float("nan")
    return float(np.mean(v[1:-1] if len(v) >= 3 else v))


def shift_pvalues(measured, expected) -> tuple[float, float]:
    """One-sided Mann-Whitney U p-values that ``measured`` is stochastically (smaller, larger)
    than ``expected``: the test asv uses to tell a real speed shift from noise."""
    from scipy.stats import mannwhitneyu
    less = mannwhitneyu(measured, expected, alternative="less").pvalue
    greater = mannwhitneyu(measured, expected, alternative="greater").pvalue
    return float(less), float(greater)
