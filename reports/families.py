"""The markdown and the console table of ``python -m studies families`` (studies/families.py):
verdicts, comparisons and contenders, from the contests' results as plain dicts. ``defs`` maps a
contest's name to its definition, read for ``op`` (">=" or "<=") and ``rule`` only."""
from __future__ import annotations

import statistics


def _num(v, pct=False) -> str:
    return "-" if v is None else f"{v:.1%}" if pct else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3f}"


def _contender_rows(name, out):
    for c in out["contenders"]:
        done = [r for r in out["results"][c["label"]] if r]
        if c["label"] in out["unavailable"] or not done:
            yield [name, c["label"], "-", "not available: " + out["unavailable"].get(c["label"], "no round measured"),
                   "-", "-", "-"]
            continue
        metric = "value" if c["mode"] == "probe" else "samples_per_second"
        values = [r[metric] for r in done]
        loads = [r["load_before"] for r in done] + [r["load_after"] for r in done]
        yield [name, c["label"], str(done[0]["threads"]), _num(statistics.median(values)), str(len(done)), f"{max(r['peak_rss_mb'] for r in done):.0f}", f"{min(loads):.2f}-{max(loads):.2f}"]


def _comparison_rows(name, out, contest):
    pct = contest.op == "<="
    for row in out["verdict"]["comparisons"]:
        if "value" not in row:
            yield [name, row["comparison"], "-", "-", "-", "0", f"{row['verdict']}: {row['why']}"]
            continue
        span = pct and contest.rule != "spread"              # a spread's range is of the values themselves
        yield [name, row["comparison"], _num(row["value"], pct), f"{_num(row['min'], span)} - {_num(row['max'], span)}",
               _num(row.get("ratio_of_medians"), pct), str(row["rounds"]), row["verdict"]]


def _md(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(start: dict, contests: dict, defs: dict, failed: list) -> str:
    m = start["machine"]
    lines = ["# Families against their best", "",
             (f"- machine: {m['cpu_model']}, {m['cpu_cores']} cores; BLAS: {m['blas']}; numpy {m['version_numpy']}, "
              f"numba {m['version_numba']}, torch {m['version_torch']}; git {m['git_commit']}"),
             (f"- run: {start['started']} to {start['ended']}; {start['rounds']} rounds per contest, "
              f"{start['seconds']:g} s timed per measurement ({start['passes']} passes, median), every measurement "
              "in a fresh process, contenders strictly interleaved, the order rotated each round"),
             (f"- load average (1 min): {start['load_start']:.2f} at the start, {start['load_end']:.2f} at the end "
              "(each measurement's, before and after, in the contenders' table)"), "", "## Verdicts", ""]
    lines += _md(["contest", "what", "value", "target", "verdict"],
                 [[n, o["verdict"]["title"], _num(o["verdict"]["value"], defs[n].op == "<="), o["verdict"]["target"],
                   o["verdict"]["verdict"]] for n, o in contests.items()])
    lines += ["", "## Comparisons", "", ("Value: the median of per-round ratios (for adam the share, for probe the "
                                         "largest distance of a session median from their median); range: per-round "
                                         "min - max."), ""]
    lines += _md(["contest", "comparison", "value", "range", "ratio of medians", "rounds", "verdict"],
                 [r for n, o in contests.items() for r in _comparison_rows(n, o, defs[n])])
    lines += ["", "## Contenders", ""]
    lines += _md(["contest", "contender", "threads", "median samples/s (probe: GFLOP/s)", "rounds", "peak RSS MB",
                  "load min-max"], [r for n, o in contests.items() for r in _contender_rows(n, o)])
    notes = sorted({f"{r.get('threads_reason')}" for o in contests.values() for rs in o["results"].values()
                    for r in rs if r and r.get("threads_reason") != "the contest's"}
                   | {r["how"] for o in contests.values() for rs in o["results"].values() for r in rs if r and "how" in r}
                   | {f"Adam timed at {r['adam_step']}" for o in contests.values() for rs in o["results"].values()
                      for r in rs if r and "adam_step" in r})
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes + failed] if notes or failed else []
    return "\n".join(lines) + "\n"


def table(contests: dict, defs: dict) -> str:
    rows = [r for n, o in contests.items() for r in _comparison_rows(n, o, defs[n])]
    header = ["contest", "comparison", "value", "range", "ratio of medians", "rounds", "verdict"]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows])
