"""A/A noise: what K sessions of unchanged code say about each cell, what a rule flags among
their pairs, and the smallest slowdown a cell can detect.

Model (per cell): the log of a session's median samples/s is the cell's true rate, plus a
session effect (the machine's drift between sessions), plus the median's own sampling error.
Both are in ``sigma``, the spread of the log session medians (``spread``: robust to an odd
session), floored at the median's sampling error from the repeats (1.2533 x their standard
deviation over sqrt(n), on the log scale). ``drift`` is the session effect alone, what more
repeats cannot reduce. Between two sessions, ln(B/A) has spread ``sqrt(2) x sigma``; K sessions
only estimate sigma, so the cut and the detectable slowdown are set on its 90% upper bound
(``upper_bound``): few sessions buy a wider cut, not more false alarms.

- The calibrated cut: a slowdown is flagged when ln(B/A) < -``Z_ALARM`` x that spread, which a
  cell of unchanged code crosses with probability ``ALARM`` (one-sided).
- The minimum detectable slowdown: the s that is flagged with probability ``POWER``:
  ln(1 + s) = (``Z_ALARM`` + ``Z_POWER``) x the pair spread (``detectable``); checked by
  re-sampling the measured sessions and repeats (``resampled_detectable``).
- The false alarms measured: of the K(K-1)/2 pairs, how many a rule flags as slower, either
  way round (``pair_alarms``).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from reports.text import at_least

ALARM = 0.01                # false alarms per cell and comparison, at most
POWER = 0.90                # the probability a slowdown of the detectable size is flagged
Z_ALARM = 2.3263            # the one-sided normal quantile of 1 - ALARM
Z_POWER = 1.2816            # ... of POWER
MAD_SIGMA = 1.4826          # MAD -> sigma of a normal
MEDIAN_SE = 1.2533          # the median's standard error over the mean's, for a normal
CONFIDENCE = 0.90           # the cut is set on this upper confidence bound of a cell's spread


@dataclass(frozen=True)
class Noise:
    """One cell's noise over K A/A sessions."""
    sessions: int           # K
    repeats: int            # the median number of timed repeats per session
    within: float           # the median relative IQR of a session's repeats
    drift: float            # the session effect alone: the log medians' spread less their sampling error
    sigma: float            # the spread of one session's log median (drift and sampling error)
    jitter: float = 0.0     # the repeats' own spread within a session (log scale, pooled)
    bound: float = 0.0      # the CONFIDENCE upper bound on sigma from K sessions: what the cut is set on

    @property
    def pair_sigma(self) -> float:
        return math.sqrt(2.0) * (self.bound or self.sigma)

    @property
    def cut(self) -> float:
        """The calibrated cut on -ln(B/A): flagged beyond it, at ``ALARM`` false alarms."""
        return Z_ALARM * self.pair_sigma

    @property
    def detectable(self) -> float:
        """The minimum detectable slowdown at the calibrated cut (0.09: 9% slower)."""
        return math.exp((Z_ALARM + Z_POWER) * self.pair_sigma) - 1.0

    def repeats_for(self, slowdown: float) -> int | None:
        """Timed repeats per session that would bring ``detectable`` down to ``slowdown``, when the
        repeats' own error is what stands in the way; None when the drift between sessions alone
        is too large (more repeats cannot help: more sessions, or a quieter machine, can)."""
        factor = (self.bound / self.sigma) if self.sigma > 0 and self.bound else 1.0
        need = math.log1p(slowdown) / ((Z_ALARM + Z_POWER) * math.sqrt(2.0) * factor)   # sigma needed
        if self.drift >= need:
            return None
        if self.jitter <= 0:
            return self.repeats
        return max(self.repeats, math.ceil(((MEDIAN_SE * self.jitter) ** 2) / (need ** 2 - self.drift ** 2)))


def session_sigma(cut: float) -> float:
    """The spread of one session's log median that a calibrated ``cut`` was set on (its
    ``CONFIDENCE`` upper bound): what ``history`` takes as a calibrated cell's noise."""
    return cut / (Z_ALARM * math.sqrt(2.0))


def spread(logs: np.ndarray) -> float:
    """The spread of K values: their standard deviation, robust to an odd one from 8 values on
    (a value beyond 4 robust sigmas, 1.4826 x MAD, of their median is set aside). Below 8, no
    value is set aside: 5 sessions of which 3 agree closely would otherwise drop the 2 that
    carry the drift (seen in a live calibration: a cut from 3 close sessions alarmed on 4 of 10
    pairs). The MAD alone wastes two thirds of what K sessions say."""
    if len(logs) >= 8:
        mad = MAD_SIGMA * float(np.median(np.abs(logs - np.median(logs))))
        if mad > 0:
            logs = logs[np.abs(logs - np.median(logs)) <= 4 * mad]
    return float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0


def upper_bound(sigma: float, k: int) -> float:
    """A ``CONFIDENCE`` upper bound on a spread estimated from ``k`` sessions (chi-square, k - 1
    degrees of freedom): the cut is set on it, so that few sessions make a wider cut rather than
    more false alarms (5 sessions: 1.94 x the estimate; 30: 1.27 x; 100: 1.14 x)."""
    from scipy.stats import chi2
    return sigma * math.sqrt((k - 1) / chi2.ppf(1 - CONFIDENCE, k - 1))


def noise(session_repeats: list[list[float]]) -> Noise:
    """A cell's noise from its timed repeats (samples/s) in each of K sessions."""
    runs = [np.asarray(r, dtype=float) for r in session_repeats if len(r)]
    if len(runs) < 2:
        raise ValueError(f"A/A calibration needs at least 2 sessions of a cell, got {len(runs)}")
    total = spread(np.log([np.median(r) for r in runs]))
    iqr = [(np.percentile(r, 75) - np.percentile(r, 25)) / np.median(r) for r in runs]
    # the repeats' variance pooled over the sessions (a median of K small-sample deviations runs low)
    pooled = [(float(np.var(np.log(r), ddof=1)), len(r)) for r in runs if len(r) > 1]
    sampling = (MEDIAN_SE * math.sqrt(np.mean([v / n for v, n in pooled]))) if pooled else 0.0
    sigma = max(total, sampling)
    return Noise(sessions=len(runs), repeats=int(np.median([len(r) for r in runs])), within=float(np.median(iqr)),
                 drift=math.sqrt(max(total ** 2 - sampling ** 2, 0.0)), sigma=sigma,
                 jitter=math.sqrt(np.mean([v for v, _ in pooled])) if pooled else 0.0,
                 bound=upper_bound(sigma, len(runs)))


def pair_alarms(session_repeats: list[list[float]], flags) -> tuple[int, int]:
    """(flagged, pairs): of every pair of sessions (each way round: is B slower than A), how many
    ``flags(a_repeats, b_repeats)`` calls a slowdown. Each unordered pair counts once: it is an
    alarm if either order is flagged."""
    flagged = pairs = 0
    for a, b in itertools.combinations(range(len(session_repeats)), 2):
        pairs += 1
        flagged += bool(flags(session_repeats[a], session_repeats[b]) or flags(session_repeats[b], session_repeats[a]))
    return flagged, pairs


def calibrated_flag(n: Noise):
    """The calibrated rule for one cell: B is slower when ln(median B / median A) < -cut."""
    def flags(a, b) -> bool:
        return math.log(np.median(b) / np.median(a)) < -n.cut
    return flags


def resampled_detectable(session_repeats: list[list[float]], n: Noise, draws: int = 2000,
                         seed: int = 0, grid: np.ndarray | None = None) -> float:
    """The minimum detectable slowdown by re-sampling, not by formula: two distinct sessions
    drawn at random, each one's repeats re-drawn with replacement, B's divided by 1 + s; the
    smallest s on ``grid`` (0 to 200%) that the calibrated cut flags in at least ``POWER`` of the
    draws; inf when none does."""
    rng = np.random.default_rng(seed)
    runs = [np.asarray(r, dtype=float) for r in session_repeats if len(r)]
    grid = np.round(np.arange(0.0, 2.0001, 0.005), 3) if grid is None else grid
    diffs = np.empty(draws)
    for i in range(draws):
        a, b = rng.choice(len(runs), size=2, replace=False)
        ra, rb = rng.choice(runs[a], size=len(runs[a])), rng.choice(runs[b], size=len(runs[b]))
        diffs[i] = math.log(np.median(rb) / np.median(ra))
    for s in grid:
        if np.mean(diffs - math.log1p(s) < -n.cut) >= POWER:
            return float(s)
    return math.inf


def calibration_table(sessions: list, target: float = 0.10, rule=None, rule_name: str = "compare"):
    """The A/A table of K sessions, one row per throughput cell that finished in at least two.
    ``sessions``: (id, parent row, tidy cells, values per repeat by run id) each, as
    ``benchmarks/compare.py`` ``load`` gives them. Today's rule is run as it is on every pair:
    compare's by default (``reports.compare.compare_cells``, its drift cut from all the pair's
    cells), else ``rule(a_repeats, b_repeats)`` per cell (the gate's); an A/A pair it calls
    faster or slower is a false alarm. ``attrs["summary"]``: the totals (``<rule_name>_alarms``,
    ``<rule_name>_rate``); ``attrs["numbers"]``: per cell, the calibrated cut, sigma, drift and
    detectable slowdown as numbers."""
    import pandas as pd

    from reports.compare import compare_cells
    repeats: dict[str, list[list[float]]] = {}
    for _, _, cells, samples in sessions:
        done = cells[(cells["kind"] == "throughput") & (cells["status"] == "FINISHED")]
        for row in done.itertuples():
            if samples.get(row.run_id):
                repeats.setdefault(row.cell, []).append(list(samples[row.run_id]))
    old = {cell: 0 for cell in repeats}
    pairs = list(itertools.combinations(range(len(sessions)), 2))
    for i, j in pairs if rule is None else ():
        (_, _, a, sa), (_, _, b, sb) = sessions[i], sessions[j]
        verdicts = compare_cells(a, sa, b, sb)
        for row in verdicts.itertuples():
            if row.cell in old and row.kind in ("slower", "faster"):
                old[row.cell] += 1
    rows, totals = [], {"compare": 0, "calibrated": 0, "cell_pairs": 0}
    numbers: dict[str, dict] = {}
    for cell, runs in sorted(repeats.items()):
        if len(runs) < 2:
            continue
        n = noise(runs)
        new, count = pair_alarms(runs, calibrated_flag(n))
        if rule is not None:
            old[cell] = pair_alarms(runs, rule)[0]
        more = n.repeats_for(target)
        totals["compare"] += old[cell]
        totals["calibrated"] += new
        totals["cell_pairs"] += count
        rows.append({"cell": cell, "sessions": n.sessions, "repeats": n.repeats, "within (IQR)": f"{n.within:.1%}",
                     "drift": f"{n.drift:.1%}", "detects": at_least(n.detectable, 1),
                     "detects (re-sampled)": at_least(resampled_detectable(runs, n), 1),
                     f"false alarms, {rule_name}": f"{old[cell]}/{count}", "false alarms, calibrated": f"{new}/{count}",
                     f"repeats to detect {target:.0%}": ("-" if n.detectable <= target else
                                                        "none: the drift alone is too large" if more is None
                                                        else str(more)),
                     "_detectable": n.detectable})
        numbers[cell] = {"cut": n.cut, "sigma": n.sigma, "drift": n.drift, "detectable": n.detectable}
    table = pd.DataFrame(rows)
    cell_pairs = max(totals["cell_pairs"], 1)
    table.attrs["summary"] = {
        "pairs": len(pairs), "cell_pairs": totals["cell_pairs"], f"{rule_name}_alarms": totals["compare"],
        f"{rule_name}_rate": totals["compare"] / cell_pairs, "calibrated_alarms": totals["calibrated"],
        "calibrated_rate": totals["calibrated"] / cell_pairs,
        "detectable_median": float(np.median(table["_detectable"])) if rows else float("nan")}
    table.attrs["numbers"] = numbers          # per cell, what compare's calibrated cut reads back
    return table.drop(columns="_detectable") if rows else table

