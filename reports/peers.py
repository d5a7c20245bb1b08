"""The report's Peers section: scikit-learn and JAX beside the project's families on hw1-q3.

From the tidy cells frame (tracking.CELL_COLUMNS): the hw1-q3 accuracy cells (the preset the
peers train by default, benchmarks/plan.py PEER_PRESETS), one row per implementation, with its
median samples/s over the trained epochs, that as a multiple of numpy-batch's in the same
session, and its final test accuracy.
"""
from __future__ import annotations

import math

from collections.abc import Collection

import pandas as pd

PRESET = "hw1-q3"
BASE = "numpy-batch"
FAMILIES = ("numpy-batch", "numba-batch", "torch-cpu")

MATH = ("Where the math differs: jax-cpu computes the project's formulas (impls/numpy_batch.py, "
        "impls/optim.py) and is held to the parity table. sklearn-mlp (MLPClassifier.partial_fit, "
        "alpha=0, shuffle=False, the epoch's rows passed in order) matches for SGD; its Adam folds "
        "the bias corrections into the step size, which is the project's Adam with eps scaled by "
        "sqrt(1 - b2^t), so it is held to the table against that variant (impls/sklearn_mlp.py), and "
        "its reported loss clips probabilities at the dtype's eps.")


def peers_section(cells: pd.DataFrame, peers: Collection[str]) -> tuple[str, list[str], pd.DataFrame] | None:
    """(title, sentences, table) for the report, or None when no peer trained hw1-q3. ``peers``:
    the peers' names, in the table's order (the caller has them from ``impls``)."""
    peers = list(peers)
    acc = cells[(cells["kind"] == "accuracy") & (cells["preset"] == PRESET)]
    if not acc["impl"].isin(peers).any():
        return None
    done = acc[acc["status"] == "FINISHED"]
    rate = done.groupby("impl")["samples_per_second_median"].median()
    accuracy = done.groupby("impl")["test_accuracy"].mean()
    base = rate.get(BASE, float("nan"))
    rows = []
    for name in [*FAMILIES, *peers]:
        mine = acc[acc["impl"] == name]
        if mine.empty:
            continue
        r = rate.get(name, float("nan"))
        rows.append({
            "implementation": name,
            "kind": "peer" if name in peers else "family",
            "dtype": str(mine["dtype"].iat[0]),
            "batch": str(mine["batch_size"].iat[0]),
            "samples/s (median epoch)": "failed" if math.isnan(r) else f"{r:,.0f}",
            f"x {BASE}": "n/a" if math.isnan(r) or math.isnan(base) else f"{r / base:.2f}x",
            "test acc": "failed" if name not in accuracy else f"{accuracy[name]:.4f}",
            "parity max err": f"{mine['parity_max_error'].max():.1e}",
        })
    lines = [f"{'; '.join(_ratio(n, rate, base) for n in peers if n in rate)}." if not math.isnan(base)
             else f"{BASE} did not train {PRESET} in this session: no multiples.",
             MATH,
             (f"The {PRESET} accuracy cells of this session: samples/s is the median over the trained epochs "
              f"(each cell in its own process, the session's threads); x {BASE}: that over {BASE}'s.")]
    return "Peers: scikit-learn and JAX beside the families (hw1-q3)", lines, pd.DataFrame(rows)


def _ratio(name: str, rate: pd.Series, base: float) -> str:
    return f"{name} runs at {rate[name] / base:.2f}x {BASE}"
