"""One number per implementation: the geometric mean of its ratios over the cells it ran, with
a percentile bootstrap interval over the timed repeats (google/benchmark's OVERALL_GEOMEAN, with
its uncertainty). In the report a ratio is a cell's speed-up over numpy-sample on the same
network and dtype (``reports/tables.py`` ``with_speedup``); in ``compare`` it is a cell's B/A.

The interval re-draws every cell's repeats (with replacement) and recomputes each median, so a
denominator that several cells share (numpy-sample's cell of a network and dtype) is drawn once
per round for all of them. It knows the spread within a session only: the drift between
sessions is what ``calibrate`` measures (``reports/noise.py``). The mean is over the cells
each implementation ran, which differ between implementations (numpy-sample runs at batch 1
only), so two implementations' numbers compare only where their cells do."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

DRAWS = 2000
LEVEL = 0.95
COLUMNS = ["impl", "cells", "geomean", "low", "high"]


def geomean_ci(samples: dict, groups: dict[str, list[tuple]], draws: int = DRAWS, seed: int = 0,
               level: float = LEVEL) -> pd.DataFrame:
    """Per group (an implementation): the geometric mean over its (numerator key, denominator
    key) pairs of median(samples[numerator]) / median(samples[denominator]), and the ``level``
    bootstrap interval; one row per group with pairs, largest first (``COLUMNS``)."""
    rng = np.random.default_rng(seed)
    used = sorted({k for pairs in groups.values() for pair in pairs for k in pair}, key=str)
    point = {k: float(np.median(samples[k])) for k in used}
    drawn = {}
    for k in used:                    # draws x repeats indices, a median per draw
        values = np.asarray(samples[k], dtype=float)
        drawn[k] = np.median(values[rng.integers(0, len(values), size=(draws, len(values)))], axis=1)
    rows = []
    for name, pairs in groups.items():
        if not pairs:
            continue
        logs = np.mean([np.log(drawn[n] / drawn[d]) for n, d in pairs], axis=0)
        low, high = np.percentile(logs, [50 * (1 - level), 50 * (1 + level)])
        mean = math.exp(float(np.mean([math.log(point[n] / point[d]) for n, d in pairs])))
        rows.append({"impl": name, "cells": len(pairs), "geomean": mean,
                     "low": math.exp(float(low)), "high": math.exp(float(high))})
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("geomean", ascending=False, ignore_index=True)


def _usable(cells: pd.DataFrame, repeats: dict) -> pd.DataFrame:
    """The FINISHED throughput cells with positive repeats recorded."""
    done = cells[(cells["kind"] == "throughput") & (cells["status"] == "FINISHED")]
    return done[[bool(repeats.get(r)) and min(repeats[r]) > 0 for r in done["run_id"]]]


def overall_speedups(cells: pd.DataFrame, repeats: dict, base: str, **kw) -> pd.DataFrame:
    """Per implementation other than ``base``: the geometric mean of its throughput cells'
    speed-ups over ``base`` (its throughput cell on the same network and dtype), with the
    interval. ``repeats``: run_id -> samples/s per timed repeat."""
    done = _usable(cells, repeats)
    base_of = {}
    for r in done[done["impl"] == base].itertuples():
        base_of.setdefault((r.network, r.dtype), r.run_id)
    groups: dict[str, list[tuple]] = {}
    for r in done[done["impl"] != base].itertuples():
        if (r.network, r.dtype) in base_of:
            groups.setdefault(r.impl, []).append((r.run_id, base_of[(r.network, r.dtype)]))
    return geomean_ci(repeats, groups, **kw)


def overall_changes(a: pd.DataFrame, a_repeats: dict, b: pd.DataFrame, b_repeats: dict, **kw) -> pd.DataFrame:
    """Per implementation: the geometric mean of B/A over the throughput cells both sessions
    finished, with the interval."""
    ua, ub = _usable(a, a_repeats).set_index("cell"), _usable(b, b_repeats).set_index("cell")
    groups: dict[str, list[tuple]] = {}
    for cell in sorted(set(ua.index) & set(ub.index)):
        groups.setdefault(ub.loc[cell, "impl"], []).append((("B", ub.loc[cell, "run_id"]), ("A", ua.loc[cell, "run_id"])))
    samples = {("A", k): v for k, v in a_repeats.items()} | {("B", k): v for k, v in b_repeats.items()}
    return geomean_ci(samples, groups, **kw)


def sentence(table: pd.DataFrame, what: str) -> str:
    """One line: each implementation's number, its interval and its cell count."""
    return (f"Overall, the geometric mean of {what} over the throughput cells each ran ({LEVEL:.0%} bootstrap "
            "interval over the timed repeats, not the drift between sessions): "
            + "; ".join(f"{r.impl} {r.geomean:.3g}x [{r.low:.3g}, {r.high:.3g}] ({r.cells} cell{'s' * (r.cells != 1)})"
                        for r in table.itertuples()))
