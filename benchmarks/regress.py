"""The regression gate's logic: the baseline file, judging a session against it, and the
rule by which ``--update`` rewrites it. No argparse and no mlflow here: ``benchmarks/gate.py``
runs a gate session and reads it back; this module only compares numbers.

- accuracy: each gated accuracy cell runs several seeds; the mean over seeds must reach the
  baseline's expected value minus its tolerance. The table shows mean ± std, and time-to-target
  as an MLPerf-style olympic mean (fastest and slowest seed dropped).
- loss: the training-loss curve (mean over seeds, per epoch) must stay below the baseline's
  plus a tolerance from the seeds' spread (3 std, at least 2% of the loss). It sees what
  training does, not only where it ends: an lr that drops after the first step costs Adam on
  hw1-q3 about one point of accuracy (inside that tolerance) but 50% more loss in epoch 1.
- parity: every cell's one-step parity error must stay within the baseline's bound (the
  contract's tolerance for its dtype). A cell that fails parity is never timed.
- speed: an implementation's speed ratio over numpy-sample, timed in alternation with it in the
  same process (so machine drift cancels), is compared with the baseline's samples by one-sided
  Mann-Whitney U tests (as asv does). A shift counts only when it is both significant
  (p < ALPHA) and beyond the band (by default at least +-50% of the baseline ratio:
  ``MIN_BAND``). ``--speed off|warn|fail`` decides what a slowdown does. Samples must carry
  information: at least ``MIN_SAMPLES`` on each side, not all equal (three equal samples never
  let p fall below 0.011, so a 50x slowdown would pass). Otherwise the check says "no verdict",
  and under ``--speed fail`` it fails: the gate never passes on nothing.

The baseline file itself (schema, atomic write) is ``benchmarks/baseline.py``.

How ``--update`` rewrites the baseline from the verdicts (``left_band``) is
``benchmarks/update_rule.py``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

import impls
from reports.stats import olympic_mean, shift_pvalues
from reports.text import at_least

ALPHA = 0.01              # significance level of the speed test
MIN_BAND = 0.5            # default speed band: at least +-50% of the baseline median ratio
ACC_TOL = (0.005, 0.015)  # accuracy tolerance: 3 std over seeds, clipped to this range
# fewest speed samples a side that can show a shift: with 5 against 7 the smallest one-sided
# Mann-Whitney p is 1/792, well below ALPHA; with 3 equal samples it never falls below 0.011
MIN_SAMPLES = 5


def cell_key(row) -> str:
    """The baseline key of a cell: preset/dataset/impl/dtype/batch (seeds are in the entry)."""
    return f"{row['preset']}/{row['dataset']}/{row['impl']}/{row['dtype']}/b{int(row['batch_size'])}"


@dataclass
class Measured:
    """What one session measured for one baseline key."""
    key: str
    kind: str
    impl: str
    dtype: str
    seeds: list = field(default_factory=list)
    accuracies: list = field(default_factory=list)
    times_to_target: list = field(default_factory=list)
    parity: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    rates: list = field(default_factory=list)         # throughput samples (samples/s)
    ratios: list = field(default_factory=list)        # rates / numpy-sample's median
    curves: list = field(default_factory=list)        # per seed: training loss per epoch

    @property
    def acc_mean(self):
        return float(np.mean(self.accuracies)) if self.accuracies else None

    @property
    def acc_std(self):
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def collect(cells, samples, paired_ratios=None, curves=None) -> dict[str, Measured]:
    """Group a session's tidy cells by baseline key. ``curves``: run_id -> training loss per
    epoch (accuracy cells); ``samples``: run_id -> samples/s per repeat;
    ``paired_ratios``: run_id -> speed ratio per repeat, timed against numpy-sample in
    alternation (preferred: machine drift cancels); without them a ratio is a repeat's rate
    over the numpy-sample cell's median."""
    paired_ratios = paired_ratios or {}
    out: dict[str, Measured] = {}
    for _, row in cells.iterrows():
        kind = "speed" if row["kind"] == "throughput" else "accuracy"
        key = ("speed/" if kind == "speed" else "") + cell_key(row)
        m = out.setdefault(key, Measured(key, kind, row["impl"], row["dtype"]))
        if not math.isnan(row["parity_max_error"]):
            m.parity.append(float(row["parity_max_error"]))
        if row["status"] != "FINISHED":
            m.failures.append(str(row["reason"]))
            continue
        if kind == "accuracy":
            m.seeds.append(int(row["seed"]))
            m.accuracies.append(float(row["test_accuracy"]))
            ttt = row["time_to_target_seconds"]
            m.times_to_target.append(None if ttt is None or math.isnan(ttt) else float(ttt))
            if curves and curves.get(row["run_id"]):
                m.curves.append(list(curves[row["run_id"]]))
        else:
            m.rates = list(samples.get(row["run_id"], []))
            m.ratios = list(paired_ratios.get(row["run_id"], []))
    base = next((m for m in out.values() if m.kind == "speed" and m.impl == impls.SPEEDUP_BASE and m.rates), None)
    for m in out.values():
        if m.kind == "speed" and m.rates and not m.ratios and base is not None:
            ref = float(np.median(base.rates))
            m.ratios = [r / ref for r in m.rates]
    return out


@dataclass
class Verdict:
    cell: str
    check: str
    expected: str
    measured: str
    delta: str
    verdict: str          # ok | FAIL | SLOWER (warn) | faster | better | new | missing | no verdict
    failing: bool
    left_band: bool = False   # measured outside the entry's tolerance or band: --update moves it


def _fmt(x, spec=".4f"):
    return "-" if x is None else format(x, spec)


def judge(measured: dict[str, Measured], baseline: dict, speed_mode: str, checks=("accuracy", "parity", "speed"),
          in_scope=lambda key: True, cuts: dict[str, tuple[float, float]] | None = None) -> list[Verdict]:
    """One verdict per (cell, check). Baseline entries in scope that were not measured are
    ``missing`` (failing): a gate never passes on cells it did not run. ``cuts``: key -> (the
    calibrated cut on |ln(measured / baseline ratio)|, the slowdown it detects) from the machine's
    noise profile (``benchmarks/gate.py``); such a speed check is judged by that cut alone."""
    cuts = cuts or {}
    out: list[Verdict] = []
    cells = {k: v for k, v in baseline["cells"].items() if in_scope(k)}
    for key in sorted(set(cells) | set(measured)):
        entry, m = cells.get(key), measured.get(key)
        if m is None:
            out.append(Verdict(key, "all", "measured", "not measured", "-", "missing", True))
            continue
        if m.failures and not (m.accuracies or m.rates):
            out.append(Verdict(key, "run", "finished", m.failures[0][:90], "-", "FAIL", True))
        if entry is None:
            out.append(new_verdict(key, "all"))
            continue
        if "parity" in entry and "parity" in checks:
            bound = entry["parity"]["bound"]
            worst = max(m.parity) if m.parity else None
            ok = worst is not None and worst <= bound
            out.append(Verdict(key, "parity", f"<= {bound:.0e}", _fmt(worst, ".1e"),
                               "-" if worst is None else f"{worst / bound:.2g}x bound", "ok" if ok else "FAIL", not ok))
        if m.kind == "accuracy" and "accuracy" in checks:
            if "accuracy" in entry:
                out.append(judge_accuracy(key, entry["accuracy"], m))
            elif m.accuracies:
                out.append(new_verdict(key, "accuracy"))
            if "loss" in entry:
                out.append(judge_loss(key, entry["loss"], m))
            elif m.curves:
                out.append(new_verdict(key, "loss"))
        if (m.kind == "speed" and speed_mode != "off" and "speed" in checks
                and m.impl != impls.SPEEDUP_BASE):   # the base's ratio to itself is 1 by definition
            out.append(judge_speed(key, entry["speed"], m, speed_mode, cuts.get(key)) if "speed" in entry else
                       new_verdict(key, "speed"))
    return out


def new_verdict(key: str, check: str) -> Verdict:
    """Measured, with nothing in the baseline to judge it by: ``--update`` adds it."""
    return Verdict(key, check, "no baseline", "measured", "-", "new", False, left_band=True)


def judge_accuracy(key: str, e: dict, m: Measured) -> Verdict:
    mean = m.acc_mean
    seeds_match = sorted(m.seeds) == sorted(e["seeds"])
    ok = mean is not None and mean >= e["expected"] - e["tolerance"] and seeds_match
    ttt = olympic_mean(m.times_to_target)       # nan when no seed reached the target
    reached = sum(t is not None for t in m.times_to_target)
    text = f"{mean:.4f} ± {m.acc_std:.4f} ({len(m.accuracies)} seeds)" if mean is not None else "-"
    text += (f"; time-to-target {ttt:.2f} s olympic mean, {reached}/{len(m.times_to_target)} reached"
             if not math.isnan(ttt) else "")
    better = ok and mean > e["expected"] + e["tolerance"]
    left = mean is None or not seeds_match or abs(mean - e["expected"]) > e["tolerance"]
    return Verdict(key, "accuracy", f"{e['expected']:.4f} - {e['tolerance']:.4f}", text,
                   "-" if mean is None else f"{mean - e['expected']:+.4f}",
                   "better" if better else ("ok" if ok else "FAIL"), not ok, left_band=left)


def loss_curve(m: Measured) -> tuple[list[float], list[float]] | None:
    """(mean, std over seeds) of the training loss per epoch, or None without full curves."""
    if not m.curves or len({len(c) for c in m.curves}) != 1:
        return None
    a = np.asarray(m.curves, dtype=np.float64)
    std = a.std(axis=0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
    return a.mean(axis=0).tolist(), std.tolist()


def judge_loss(key: str, e: dict, m: Measured) -> Verdict:
    curve = loss_curve(m)
    expected = "[" + ", ".join(f"{x:.3f}+{t:.3f}" for x, t in zip(e["expected"], e["tolerance"])) + "]"
    if curve is None or len(curve[0]) != len(e["expected"]) or sorted(m.seeds) != sorted(e["seeds"]):
        return Verdict(key, "loss", expected, "no comparable curve", "-", "FAIL", True, left_band=True)
    mean = curve[0]
    worst = max(range(len(mean)), key=lambda i: (mean[i] - e["expected"][i]) / e["tolerance"][i])
    over = [mu > x + t for mu, x, t in zip(mean, e["expected"], e["tolerance"])]
    left = any(abs(mu - x) > t for mu, x, t in zip(mean, e["expected"], e["tolerance"]))
    return Verdict(key, "loss", expected, "[" + ", ".join(f"{x:.3f}" for x in mean) + "]",
                   f"{mean[worst] - e['expected'][worst]:+.3f} (epoch {worst + 1})",
                   "FAIL" if any(over) else "ok", any(over), left_band=left)


def judge_speed(key: str, e: dict, m: Measured, mode: str, calibrated: tuple[float, float] | None = None) -> Verdict:
    """The band and a Mann-Whitney test; with ``calibrated`` (cut, detects), the cut alone."""
    expected = f"{e['ratio']:.3g}x [{e['band'][0]:.3g}, {e['band'][1]:.3g}]"
    if calibrated is not None and uninformative(m.ratios) is None:
        return _judge_calibrated(key, e, m, mode, *calibrated)
    why = uninformative(m.ratios, "the session") or uninformative(e["samples"], "the baseline")
    if why:
        # an uninformative baseline entry moves on --update, from informative measurements
        return Verdict(key, "speed", expected, f"no verdict: {why}", "-",
                       "FAIL" if mode == "fail" else "no verdict", mode == "fail",
                       left_band=uninformative(m.ratios) is None)
    med = float(np.median(m.ratios))
    p_slower, p_faster = shift_pvalues(m.ratios, e["samples"])
    delta = f"{(med / e['ratio'] - 1) * 100:+.0f}%"
    if med < e["band"][0] and p_slower < ALPHA:
        verdict = {"fail": "FAIL", "warn": "SLOWER (warn)"}[mode]
        return Verdict(key, "speed", expected, f"{med:.3g}x (p_slower={p_slower:.2g})", delta, verdict,
                       mode == "fail", left_band=True)
    if med > e["band"][1] and p_faster < ALPHA:
        return Verdict(key, "speed", expected, f"{med:.3g}x (p_faster={p_faster:.2g})", delta, "faster", False,
                       left_band=True)
    return Verdict(key, "speed", expected, f"{med:.3g}x (p_slower={p_slower:.2g})", delta, "ok", False)


def _judge_calibrated(key: str, e: dict, m: Measured, mode: str, cut: float, detects: float) -> Verdict:
    """Slower (faster) when the session's median ratio is below (above) the baseline's by more
    than the calibrated cut: the rule whose false alarms ``calibrate --gate`` measured."""
    med = float(np.median(m.ratios))
    shift = math.log(med / e["ratio"])
    expected = f"{e['ratio']:.3g}x ×/÷{math.exp(cut):.3g} calibrated (detects {at_least(detects)})"
    measured, delta = f"{med:.3g}x", f"{(med / e['ratio'] - 1) * 100:+.0f}%"
    if shift < -cut:
        return Verdict(key, "speed", expected, measured, delta, {"fail": "FAIL", "warn": "SLOWER (warn)"}[mode],
                       mode == "fail", left_band=True)
    if shift > cut:
        return Verdict(key, "speed", expected, measured, delta, "faster", False, left_band=True)
    return Verdict(key, "speed", expected, measured, delta, "ok", False)


def uninformative(samples, side: str = "") -> str | None:
    """Why ``samples`` cannot show a speed shift (too few, or all equal), or None."""
    if len(samples) < MIN_SAMPLES:
        return f"{side} has {len(samples)} sample(s), fewer than {MIN_SAMPLES}"
    if len(set(samples)) == 1:
        return f"{side}'s {len(samples)} samples are all equal"
    return None


def print_table(verdicts: list[Verdict], out=None) -> None:
    import pandas as pd
    from reports.tables import to_text
    cols = ["cell", "check", "expected", "measured", "delta", "verdict"]
    print(to_text(pd.DataFrame([[getattr(v, c) for c in cols] for v in verdicts], columns=cols)), file=out or sys.stdout)
