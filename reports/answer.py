"""What a report says first: which implementation is fastest, is it correct, and what in the
session deserves suspicion (noise, skips, anomalies, budget cuts, load). From the tidy cells
frame (``tracking.CELL_COLUMNS``); every line is a sentence a newcomer can read alone.
"""
from __future__ import annotations

import math

import pandas as pd

from reports import agreement
from reports.geomean import overall_speedups, sentence
from reports.tables import with_speedup

NOISE_THRESHOLD = 0.25       # relative IQR (IQR / median of the repeats) above which a cell is noisy


OPTIONAL = ("samples_per_second_relative_iqr", "load_average_start", "load_average_end", "budget", "shape_fraction")


def complete(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with the columns that older sessions did not record, empty."""
    return cells.assign(**{c: pd.Series(float("nan"), index=cells.index, dtype=object if c == "budget" else float)
                           for c in OPTIONAL if c not in cells.columns})


def _short(dtype: str) -> str:
    return str(dtype).replace("float", "f")


def _per_impl(group: pd.DataFrame) -> pd.DataFrame:
    """One row per implementation: its median samples/s (over seeds), the quartiles' extremes
    and the worst parity error, fastest first."""
    return (group.groupby("impl", sort=False)
            .agg(rate=("samples_per_second_median", "median"), q1=("samples_per_second_q1", "min"),
                 q3=("samples_per_second_q3", "max"), parity=("parity_max_error", "max"))
            .sort_values("rate", ascending=False))


def headline(cells: pd.DataFrame, speedup_base: str, repeats: dict | None = None) -> list[str]:
    """For each preset, dtype and batch: the fastest implementation that passed parity, by how
    much over the next one and over ``speedup_base`` (numpy-sample), and whether its accuracy agrees
    (``reports/agreement.py``), then a line naming every implementation whose accuracy
    disagrees. Where the sweep timed several implementations its cells answer, else the
    accuracy cells' epochs; a winner whose cells the time budget cut says what it trained on.
    With ``repeats`` (run_id -> samples/s per timed repeat), a last line gives each
    implementation's geometric-mean speed-up with its interval (``reports/geomean.py``)."""
    if cells.empty:
        return ["no cell finished: nothing to compare"]
    cells = complete(cells)
    done = with_speedup(cells[cells["status"] == "FINISHED"], speedup_base)
    judged = agreement.judge(cells)
    lines = []
    for (preset, dtype, batch), group in done.groupby(["preset", "dtype", "batch_size"], sort=True):
        thr, acc = group[group["kind"] == "throughput"], group[group["kind"] == "accuracy"]
        pick = thr if thr["impl"].nunique() > 1 or acc.empty else acc
        ranked = _per_impl(pick)
        if len(ranked) == 1 and ranked.index[0] == speedup_base and acc.empty:
            continue                  # the speed-up base timed alone: it is there for the speed-ups
        where = f"{preset} {_short(dtype)} batch {batch}"
        best, rate = ranked.index[0], ranked["rate"].iat[0]
        source = "throughput cells" if pick is thr else "accuracy cells' epochs"
        cut = "; ".join(sorted(set(filter(None, pick.loc[pick["impl"] == best, "budget"].map(agreement.budget_words)))))
        source += f"; {cut}" if cut else ""
        note = accuracy_note(judged, preset, dtype, batch, best)
        if len(ranked) == 1:
            lines.append(f"{where}: only {best} ran, {rate:,.0f} samples/s ({source})" + note)
            lines += disagreements(judged, preset, dtype, batch, where)
            continue
        nxt = ranked.iloc[1]
        tie = "; IQRs overlap: a tie within noise" if nxt["q3"] >= ranked["q1"].iat[0] else ""
        line = (f"{where}: **{best}** is fastest, {rate:,.0f} samples/s ({source}), "
                f"{rate / nxt['rate']:.2f}x the next ({ranked.index[1]}{tie})")
        up = pick.loc[pick["impl"] == best, "speedup"].median()
        if best != speedup_base and not math.isnan(up):
            line += f", {up:.3g}x {speedup_base}"
        shape = pd.to_numeric(pick.loc[pick["impl"] == best, "shape_fraction"], errors="coerce").median()
        if not math.isnan(shape):
            line += f", {100 * shape:.0f}% of what this machine's GEMMs reach at these shapes"
        line += f"; parity passed (max relative error {ranked['parity'].iat[0]:.1e})"
        lines.append(line + note)
        lines += disagreements(judged, preset, dtype, batch, where)
    overall = overall_speedups(cells, repeats, speedup_base) if repeats else None
    if overall is not None and not overall.empty:
        lines.append(sentence(overall, f"speed-ups over {speedup_base}"))
    return lines


def _mine(judged: pd.DataFrame, preset: str, dtype: str, batch) -> pd.DataFrame:
    return judged[(judged["preset"] == preset) & (judged["dtype"] == dtype) & (judged["batch_size"] == batch)]


def accuracy_note(judged: pd.DataFrame, preset: str, dtype: str, batch, impl: str) -> str:
    """"; test accuracy 0.8742, within 0.0100 of the 4 implementations' median", or by how much
    it differs, or why it was left out (a budget cut); "" when ``impl`` trained no accuracy cell
    with this preset, dtype and batch. ``judged``: ``agreement.judge``'s frame."""
    mine = _mine(judged, preset, dtype, batch)
    mine = mine[mine["impl"] == impl]
    if mine.empty:
        return ""
    text = f"; test accuracy {mine['test_accuracy'].mean():.4f}"
    cut = mine[mine["role"] == "cut"]
    if not cut.empty:
        return text + f" ({cut['why'].iat[0]}): left out of the accuracy agreement"
    held = mine[mine["verdict"].isin(["agrees", "DISAGREES"])]
    if held.empty:
        return text
    worst = held.loc[held["gap"].idxmax()]
    bound = worst["tolerance"] * (agreement.OWN_MATH_FACTOR if worst["role"] == "own" else 1.0)
    whose = f"the {worst['peers']} implementations' median" + (" (its own rule)" if worst["role"] == "own" else "")
    if (held["verdict"] == "DISAGREES").any():
        return text + f", DIFFERS from {whose} by {worst['gap']:.4f} (tolerance {bound:.4f})"
    return text + f", within {bound:.4f} of {whose}"


def disagreements(judged: pd.DataFrame, preset: str, dtype: str, batch, where: str) -> list[str]:
    """One line naming every implementation whose accuracy disagrees in this configuration
    (its largest gap over the seeds), or none."""
    bad = _mine(judged, preset, dtype, batch)
    bad = bad[bad["verdict"] == "DISAGREES"].sort_values("gap", ascending=False).drop_duplicates("impl")
    if bad.empty:
        return []
    return [f"{where}: the test accuracies DISAGREE: " + "; ".join(
        f"{r.impl} ends at {r.test_accuracy:.4f} on seed {r.seed}, {r.gap:.4f} from the median of {r.peers} "
        f"implementations (tolerance {r.tolerance * (agreement.OWN_MATH_FACTOR if r.role == 'own' else 1.0):.4f})"
        for r in bad.itertuples())]


def noisy(cells: pd.DataFrame) -> list[str]:
    done = cells[(cells["status"] == "FINISHED") & (cells["samples_per_second_relative_iqr"] > NOISE_THRESHOLD)]
    return [f"{r.cell}: IQR of the repeats is {100 * r.samples_per_second_relative_iqr:.0f}% of the median"
            for r in done.itertuples()]


def anomalies(cells: pd.DataFrame, cores: int | None = None) -> list[str]:
    """Throughput that falls as the batch grows (IQRs apart) within one implementation, and
    cells measured while the machine was loaded beyond its cores."""
    out = []
    thr = cells[(cells["kind"] == "throughput") & (cells["status"] == "FINISHED")]
    for (impl, network, dtype), g in thr.groupby(["impl", "network", "dtype"], sort=False):
        g = g.sort_values("batch_size")
        for (_, small), (_, big) in zip(g.iterrows(), g.iloc[1:].iterrows()):
            if big["samples_per_second_q3"] < small["samples_per_second_q1"]:
                out.append(f"{impl} {_short(dtype)} on {network}: {big['samples_per_second_median']:,.0f} samples/s at "
                           f"batch {big['batch_size']}, below {small['samples_per_second_median']:,.0f} at batch "
                           f"{small['batch_size']}: throughput falls as the batch grows")
    if cores:
        load = cells[["load_average_start", "load_average_end"]].max(axis=1)
        loaded = cells.loc[load > cores + 0.5, "cell"].tolist()
        if loaded:
            which = ", ".join(loaded) if len(loaded) <= 3 else f"{len(loaded)} of {len(cells)} cells"
            out.append(f"{which}: measured under load (1-minute load average up to {load.max():.1f} on {cores} "
                       "cores; above cores + 0.5, something else was running)")
    return out


def budget_cuts(cells: pd.DataFrame) -> list[str]:
    cut = cells[cells["budget"].notna() & (cells["budget"] != "")]
    return [f"{r.cell}: {r.budget}" for r in cut.itertuples()]


ACCURACY_NOTE = ("Every implementation starts from the same initial weights and visits the samples in the "
                 "same order, so where the math is the same their curves coincide: lines on top of each "
                 "other are the parity check at full scale. A line that departs is a bug, or float32 "
                 "rounding drift where the parity column says so.")


def accuracy_spread(cells: pd.DataFrame) -> list[str]:
    """The agreement rule, then per configuration and seed: the range of final test accuracy
    across implementations and the verdict (``reports/agreement.py``); [] when no two accuracy
    cells can be compared."""
    lines = agreement.group_lines(agreement.judge(cells))
    return [agreement.RULE, *lines] if lines else []
