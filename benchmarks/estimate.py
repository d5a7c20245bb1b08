"""The line a bench session prints before its first cell: how long it will take, counting
every cell, from what earlier sessions on this machine measured (``tracking.durations``)."""
from __future__ import annotations

from benchmarks.budget import fit_repeats
from benchmarks.plan import BenchOptions, Cell
from tracking.durations import Durations

THROUGHPUT_START_SECONDS = 3.0    # a new throughput cell beside its repeats: calibration, start-up


def estimate(cells: list[Cell], options: BenchOptions, earlier: Durations, train_size: int) -> str:
    """The line a session prints before it starts: how long, counting every cell. A cell of
    the last session of this mode on this machine as long as it took then; a new throughput
    cell from its repeats; a new accuracy cell from its configuration's training rate in any
    earlier session here, else at its cell budget (a bound, said so), else it is named as not
    counted. The time around the cells as in that last session, where there is one."""
    known = [c for c in cells if c.name in earlier.seconds]
    total, parts = sum(earlier.seconds[c.name] for c in known), []
    if known:
        parts.append(f"{len(known)} cells as long as in session {earlier.session[:8]}")
    new = [c for c in cells if c.name not in earlier.seconds]
    throughput = [c for c in new if c.kind == "throughput"]
    if throughput:
        paired = 2 if options.paired_reference else 1
        repeats, _ = fit_repeats(options.repeats, options.repeat_seconds, options.paired_reference, options.cell_budget)
        each = repeats * options.repeat_seconds * paired + THROUGHPUT_START_SECONDS
        total += each * len(throughput)
        parts.append(f"{len(throughput)} new throughput cells at about {each:.0f} s each")
    rated, unrated = [], []
    for c in (c for c in new if c.kind == "accuracy"):
        key = (c.config.impl, c.config.preset, c.config.dtype, c.config.batch_size)
        (rated if key in earlier.rates else unrated).append(c)
    for c in rated:
        rate, beside = earlier.rates[c.config.impl, c.config.preset, c.config.dtype, c.config.batch_size]
        training = c.config.epochs * (c.config.train_limit or train_size) / rate
        total += beside + min(training, options.cell_budget or training)
    if rated:
        parts.append(f"{len(rated)} new accuracy cells from their training rate in earlier sessions here")
    if unrated and options.cell_budget:
        total += len(unrated) * options.cell_budget
        parts.append(f"{len(unrated)} accuracy cells never run here, counted at their {options.cell_budget:g} s "
                     "training budget each")
    elif unrated:
        parts.append(f"{len(unrated)} accuracy cells never run here not counted: no cell budget bounds them")
    scaling = [c for c in new if c.kind == "scaling"]
    if scaling:
        parts.append(f"{len(scaling)} scaling cells never run here not counted")
    if earlier.beside is not None:
        total += earlier.beside
        parts.append(f"{earlier.beside / 60:.1f} min around the cells as in session {earlier.session[:8]} (probes, "
                     "workers starting, the report, the pytest-benchmark suite where it ran)")
    else:
        parts.append("the steps around the cells not counted: no earlier session of this mode here")
    lead = ("more than about" if (unrated and not options.cell_budget) or scaling else
            "up to about" if unrated else "about")
    scope = f"{len(cells)} cells" + (" and the steps around them" if earlier.beside is not None else "")
    return f"estimate: {lead} {total / 60:.1f} min for {scope} ({'; '.join(parts)})"
