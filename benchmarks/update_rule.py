"""The rule by which ``regress --update`` rewrites the baseline, in one place (``left_band``):
an entry is rewritten only when its own verdict (``benchmarks/regress.py``), judged against the
old entry, says the measurement left its tolerance or band (or the entry is new). Everything
else is kept byte for byte, so ``--update`` on an unchanged tree is a no-op; entries the
session did not measure are kept too, never dropped. ``merged`` applies the entries that moved
to the file as it is when the update holds its lock, so two updates run together (say, of two
implementations) each keep their entries.
"""
from __future__ import annotations

import numpy as np

import impls
from benchmarks.regress import ACC_TOL, Measured, Verdict, loss_curve, uninformative


def speed_entry(ratios: list[float], speed_band: float, machine: str | None = None) -> dict:
    """A baseline's speed entry from a session's paired ratios: their median, a band of at least
    ``speed_band`` either side, the samples, and the machine label that measured them."""
    med = float(np.median(ratios))
    lo, hi = np.percentile(ratios, [10, 90])
    band = [min(lo, med * (1 - speed_band)), max(hi, med * (1 + speed_band))]
    samples = sorted(_sig(r) for r in ratios)
    if uninformative(samples):                 # distinct only beyond 3 digits
        samples = sorted(_sig(r, 6) for r in ratios)
    return {"ratio": _sig(med), "band": [_sig(b) for b in band], "samples": samples,
            **({"machine": machine} if machine else {})}


def updated_baseline(old: dict, measured: dict[str, Measured], verdicts: list[Verdict], speed_band: float,
                     options_record: dict, machine: str | None = None) -> tuple[dict, list[str]]:
    """(the new baseline, the keys that moved). The rule is ``left_band`` on each verdict
    judged against the old baseline; nothing else moves, nothing is dropped. A speed entry
    records ``machine``, the label it was measured on: a noise profile judges only entries
    measured where it was."""
    moved_checks = {(v.cell, v.check) for v in verdicts if v.left_band}
    cells = {k: dict(v) for k, v in old["cells"].items()}
    moved = []
    for key, m in measured.items():
        entry = cells.setdefault(key, {})
        before = dict(entry)
        new = (key, "all") in moved_checks
        entry.setdefault("parity", {"bound": impls.PARITY_TOLERANCE[m.dtype]})
        if m.kind == "accuracy" and m.accuracies and (new or (key, "accuracy") in moved_checks):
            tol = round(min(max(3 * m.acc_std, ACC_TOL[0]), ACC_TOL[1]), 4)
            entry["accuracy"] = {"expected": round(m.acc_mean, 4), "tolerance": tol, "seeds": sorted(m.seeds)}
        curve = loss_curve(m) if m.kind == "accuracy" else None
        if curve and (new or (key, "loss") in moved_checks):
            mean, std = curve
            entry["loss"] = {"expected": [round(x, 4) for x in mean], "seeds": sorted(m.seeds),
                             "tolerance": [round(max(3 * s, 0.02 * abs(x), 1e-4), 4) for x, s in zip(mean, std)]}
        if (m.kind == "speed" and uninformative(m.ratios) is None and m.impl != impls.SPEEDUP_BASE
                and (new or (key, "speed") in moved_checks)):
            entry["speed"] = speed_entry(m.ratios, speed_band, machine)
        if entry != before:
            moved.append(key)
    return {"about": "written by `python -m benchmarks regress --update`; review changes like code",
            "options": options_record, "cells": cells}, moved


def merged(current: dict, new: dict, moved: list[str]) -> dict:
    """``new``'s moved entries applied to the baseline as it is ``current``ly on disk: each
    update replaces its own entries, and every other entry stays as the file has it now."""
    cells = {**current["cells"], **{k: new["cells"][k] for k in moved}}
    return {**new, "cells": cells}


def _sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


