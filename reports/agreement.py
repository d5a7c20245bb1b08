"""Whether the implementations agree on accuracy: the rule, and a verdict for every finished
accuracy cell. From the tidy cells frame (``tracking.CELL_COLUMNS``).

Every implementation trains a preset from the same initial weights in the same sample order, so
implementations that share the math end at nearly the same test accuracy on the same seed. How
near depends on the dtype, and the tolerance says so:

- float64: rounding only. Five implementations ended hw1-q4 (one epoch on 20,000 samples) at the
  same 0.5435; numpy-batch with its learning rate cut to a fifth ended at 0.3345.
- float32: rounding differs between BLAS kernels, fused programs and reduction orders, and
  training amplifies it. On hw1-q3 (float32, batch 256), numpy-batch, numba-batch and torch-cpu
  ended within 0.0014 of each other on seeds 0-2 after one epoch on 20,000 samples (--quick's
  schedule), within 0.0052 after two (the gate's), and within 0.0051 on seeds 0-1 after five
  full epochs. FLOOR["float32"], 0.010, is above all of these. The same fault (numpy-batch's
  learning rate cut to a fifth) moved its float32 accuracy by 0.03 after one epoch (seeds 0 and
  1, not seed 2) and by 0.0084-0.0087 after five: float32 accuracy shows a fault that large only
  in part, and the float64 preset is where the agreement check has its power.

The rule, per configuration (preset, dtype, batch size) and seed: the consensus is the median
test accuracy of the implementations that share the math; a cell agrees when it is within the
tolerance of it. The tolerance is the larger of the dtype's floor and ``ROBUST_SDS`` robust
standard deviations (1.4826 x the median absolute deviation from the consensus, pooled over the
seeds where at least three implementations trained): a session whose implementations drift
further apart than the floor allows widens the bound by what it measured, and one implementation
far off cannot widen it alone. With two implementations the consensus is their mean: they are
named together when they are further apart than twice the tolerance.

Not the seed spread: on the same runs one implementation's accuracy moved by 0.03 from seed to
seed (its standard deviation 0.015-0.017), six times the largest drift between implementations
on one seed, so a bound from it would hide a broken implementation. It also needs several seeds,
and full, --quick and --dry-run sessions run seed 0 only (the gate runs 0, 1, 2): the rule works
per seed, so one seed is enough.

Judged apart:
- a peer whose results depart from the families' by design (``OWN_MATH``: sklearn-mlp's Adam,
  jax-cpu's XLA program) is not part of the consensus, and is held to ``OWN_MATH_FACTOR`` times
  the tolerance;
- a cell that the time budget cut (fewer samples, or fewer epochs) learned from less: it is left
  out, and the report says so and why.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

FLOOR = {"float64": 0.002, "float32": 0.010}    # any other dtype: float32's
ROBUST_SDS = 3.0
MAD_TO_SD = 1.4826                # a normal distribution's standard deviation per median absolute deviation
# peers whose float32 results depart from the families' by design, and how: held to their own rule
OWN_MATH = {"sklearn-mlp": "its Adam folds both bias corrections into the step size, which moves eps "
                           "(measured up to 0.0086 from the median)",
            "jax-cpu": "XLA fuses and reorders its float32 program (measured up to 0.0066 from the median "
                       "after one epoch, where the others stay within 0.0014 of each other)"}
OWN_MATH_FACTOR = 2.0
KEYS = ["preset", "dtype", "batch_size"]

RULE = (f"Accuracy agreement: on each seed, an implementation agrees when its final test accuracy is within the "
        f"tolerance of the median of the implementations that share its math. The tolerance is the larger of a "
        f"floor ({FLOOR['float64']} in float64, where they differ by rounding only; {FLOOR['float32']} in float32, "
        f"above the drift measured between clean implementations) and {ROBUST_SDS:g} robust standard deviations "
        f"of this session's implementations around that median. "
        + " ".join(f"{name} is held to {OWN_MATH_FACTOR:g}x the tolerance and left out of the median: {why}."
                   for name, why in OWN_MATH.items())
        + " A cell that the time budget cut is left out: it learned from less.")


def budget_words(note) -> str:
    """What the budget took from a cell, from its ``bpb.budget`` tag: "trained on 17,664 of
    60,000 samples (budget)", "stopped after epoch 2 of 5 (budget)", both, or "" if nothing."""
    if not isinstance(note, str) or not note.strip():
        return ""
    words = [f"trained on {m[1]} of {m[2]} samples (budget)"
             for m in re.finditer(r"trained on ([\d,]+) of ([\d,]+) samples", note)]
    words += [f"stopped after epoch {m[1]} of {m[2]} (budget)"
              for m in re.finditer(r"stopped after epoch (\d+) of (\d+)", note)]
    return "; ".join(words) or f"{note.split(':')[0]} (budget)"


def floor(dtype: str) -> float:
    return FLOOR.get(str(dtype), FLOOR["float32"])


def judge(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per finished accuracy cell: ``preset, dtype, batch_size, seed, impl, cell,
    test_accuracy``, its ``role`` (``same`` math, ``own`` math, ``cut`` by the budget), the
    ``consensus`` it is held to (NaN where none), its ``gap`` from it, the group's ``tolerance``
    and ``robust_sd``, the ``verdict`` (agrees, DISAGREES, alone, left out) and ``why`` (the
    budget's words for a cut cell)."""
    acc = cells[(cells["kind"] == "accuracy") & (cells["status"] == "FINISHED")].copy()
    columns = [*KEYS, "seed", "impl", "cell", "test_accuracy", "role", "consensus", "peers", "gap", "tolerance",
               "robust_sd", "verdict", "why"]
    if acc.empty:
        return pd.DataFrame(columns=columns)
    budget = acc["budget"] if "budget" in acc.columns else pd.Series(None, index=acc.index)
    acc["why"] = budget.map(budget_words)
    acc["role"] = np.where(acc["why"] != "", "cut", np.where(acc["impl"].isin(list(OWN_MATH)), "own", "same"))
    same = acc[acc["role"] == "same"]
    per_seed = same.groupby([*KEYS, "seed"], dropna=False)["test_accuracy"]
    acc["consensus"] = acc.set_index([*KEYS, "seed"]).index.map(per_seed.median().to_dict()).astype(float)
    acc["peers"] = acc.set_index([*KEYS, "seed"]).index.map(per_seed.size().to_dict()).fillna(0).astype(int)
    acc["gap"] = (acc["test_accuracy"] - acc["consensus"]).abs()
    # the drift this session measured: seeds where at least three implementations trained
    measured = acc[(acc["role"] == "same") & (acc["peers"] >= 3)]
    mad = measured.groupby(KEYS, dropna=False)["gap"].median()
    acc["robust_sd"] = acc.set_index(KEYS).index.map((MAD_TO_SD * mad).to_dict()).astype(float)
    acc["tolerance"] = np.fmax(acc["dtype"].map(floor).astype(float), ROBUST_SDS * acc["robust_sd"])
    bound = np.where(acc["role"] == "own", OWN_MATH_FACTOR, 1.0) * acc["tolerance"]
    alone = acc["consensus"].isna() | ((acc["role"] == "same") & (acc["peers"] < 2))
    acc["verdict"] = np.select([acc["role"] == "cut", alone, acc["gap"] <= bound],
                               ["left out", "alone", "agrees"], "DISAGREES")
    return acc[columns].sort_values([*KEYS, "seed", "impl"]).reset_index(drop=True)


def group_lines(judged: pd.DataFrame) -> list[str]:
    """Per configuration and seed: the range of the implementations that share the math, the
    consensus and the tolerance with where it came from, the verdict naming every cell that
    disagrees, then each peer with its own rule and each cell left out, with why."""
    out = []
    for (preset, dtype, batch, seed), g in judged.groupby([*KEYS, "seed"], sort=True, dropna=False):
        where = f"{preset} {str(dtype).replace('float', 'f')} batch {batch}, seed {seed}"
        same, tol = g[g["role"] == "same"], g["tolerance"].iat[0]
        sd = g["robust_sd"].iat[0]
        source = (f"the {dtype} floor" if np.isnan(sd) or ROBUST_SDS * sd <= floor(dtype)
                  else f"{ROBUST_SDS:g} x the measured robust SD {sd:.4f}")
        if len(same) >= 2:
            lo, hi = same["test_accuracy"].min(), same["test_accuracy"].max()
            bad = same[same["verdict"] == "DISAGREES"]
            text = (f"{where}: {len(same)} implementations end at test accuracy {lo:.4f}-{hi:.4f}, median "
                    f"{same['consensus'].iat[0]:.4f}, tolerance {tol:.4f} ({source}): ")
            text += ("they agree" if bad.empty else "DISAGREE: " + ", ".join(
                f"{r.impl} {r.test_accuracy:.4f} is {r.gap:.4f} from the median" for r in bad.itertuples()))
            if len(same) == 2 and not bad.empty:
                text += " (two implementations: which one is off cannot be told)"
            out.append(text)
        for r in g[g["role"] == "own"].itertuples():
            if np.isnan(r.consensus):
                continue
            out.append(f"{where}: {r.impl} ends at {r.test_accuracy:.4f}, {r.gap:.4f} from the median: "
                       + ("it agrees" if r.verdict == "agrees" else "it DISAGREES")
                       + f" (its own rule: within {OWN_MATH_FACTOR * r.tolerance:.4f})")
        out += [f"{where}: {r.impl} ({r.test_accuracy:.4f}) left out of the agreement: {r.why}"
                for r in g[g["role"] == "cut"].itertuples()]
    return out
