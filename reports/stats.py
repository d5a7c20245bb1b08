"""Small statistics shared by the report, the harness and the regression gate.

numpy at import time; ``shift_pvalues`` imports scipy and ``detect_steps`` imports ruptures
inside the function, so the gate and the timing code can use the rest without loading them (or
pandas' plotting, or matplotlib). The per-round ratio figures at the end are the lab's
(studies/families.py).
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


def bootstrap_ratio(a, b, n: int = 4000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(median(b) / median(a), low, high): the ratio of medians with a percentile bootstrap
    confidence interval, resampling each session's repeats independently. With 3-7 repeats a
    side it is wide, which is the honest answer on a shared machine."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ra = np.median(rng.choice(a, size=(n, len(a))), axis=1)
    rb = np.median(rng.choice(b, size=(n, len(b))), axis=1)
    ratios = rb / ra
    lo, hi = np.percentile(ratios, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(np.median(b) / np.median(a)), float(lo), float(hi)


def series_noise(values, spreads=None) -> float:
    """The noise of one series of session values: the larger of the robust scatter between
    neighbouring sessions (MAD of first differences, scaled to a standard deviation) and the
    median within-session spread (IQR / 1.349), when the sessions measured one."""
    y = np.asarray(values, dtype=np.float64)
    between = 1.4826 * float(np.median(np.abs(np.diff(y)))) / math.sqrt(2) if len(y) > 2 else 0.0
    within = float(np.median(spreads)) / 1.349 if spreads is not None and len(spreads) else 0.0
    return max(between, within, 1e-12)


def detect_steps(values, spreads=None, min_size: int = 3, z: float = 4.0, min_effect: float = 0.0,
                 sigma: float | None = None) -> list[dict]:
    """Change points in one series (in session order), each kept only when it stands out of the
    measured noise. PELT (``ruptures``) with the least-absolute-deviation cost proposes the
    segments (a least-squares cost took clusters of outliers for steps: 50 false alarms in 200
    flat series with 5% outliers, against 0 for this one), with a penalty of 3 sigma ln(n); a
    proposed step is kept when the medians of the segments on its two sides differ by more than
    ``z`` standard errors (sigma from ``series_noise``, or ``sigma`` where a noise profile gives
    it: ``reports/noise.py``) and by more than ``min_effect``.
    Returns ``[{"index": first index after the step, "before", "after"}]``."""
    import ruptures
    y = np.asarray(values, dtype=np.float64)
    if len(y) < 2 * min_size:
        return []
    sigma = series_noise(y, spreads) if sigma is None else sigma
    ends = ruptures.Pelt(model="l1", min_size=min_size, jump=1).fit(y.reshape(-1, 1)).predict(
        pen=3 * sigma * math.log(len(y)))
    bounds = [0, *ends]
    steps = []
    for k in range(1, len(bounds) - 1):
        before, after = y[bounds[k - 1]:bounds[k]], y[bounds[k]:bounds[k + 1]]
        delta = float(np.median(after) - np.median(before))
        se = 1.253 * sigma * math.sqrt(1 / len(before) + 1 / len(after))
        if abs(delta) > z * se and abs(delta) > min_effect:
            steps.append({"index": bounds[k], "before": float(np.median(before)), "after": float(np.median(after))})
    return steps


def present_median(values) -> float | None:
    """The median of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def round_ratios(num: list, den: list | None) -> dict:
    """Per-round values (None: that measurement failed) -> the comparison's figures. With a
    denominator: the medians, their ratio, and the median, min and max of per-round ratios
    (rounds where both sides measured); without one, the same of the values themselves."""
    if den is None:
        values = [v for v in num if v is not None]
        return {"median": present_median(values), "rounds": len(values), "value": present_median(values),
                "min": min(values, default=None), "max": max(values, default=None)}
    ratios = [a / b for a, b in zip(num, den) if a is not None and b]
    m_num, m_den = present_median(num), present_median(den)
    return {"num_median": m_num, "den_median": m_den, "rounds": len(ratios),
            "ratio_of_medians": m_num / m_den if m_num is not None and m_den else None,
            "value": present_median(ratios), "min": min(ratios, default=None), "max": max(ratios, default=None)}


def session_spread(values: list) -> dict:
    """Session medians -> their median and the largest relative distance from it."""
    values = [v for v in values if v is not None]
    m = present_median(values)
    return {"median": m, "rounds": len(values), "min": min(values, default=None), "max": max(values, default=None),
            "value": max(abs(v / m - 1) for v in values) if m else None}
