"""``python -m studies families``: each family against its best, in one run.

A contest times its contenders in rounds: round r runs every contender once, each in a fresh
process of its own (``studies/family_worker.py``), strictly interleaved, and the order
rotates from round to round (A B, B A, ...) so that drift favours no side. A comparison is a
ratio of two contenders (a registered implementation over its family's yardstick,
``studies/yardsticks/``), judged by the median of its per-round ratios against the issue's
target; the ratio of the medians and the range of per-round ratios are shown beside it.

Contests (``CONTESTS``): numba-sample, torch-cpu, numpy-sample, floor, jax, jax-1, adam, load,
probe.
A contest whose contender cannot run here says why and does not pass; the floor's optional
peers (jax-cpu, sklearn-mlp) are left out, with the reason, when absent.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.threads import all_cores
from reports.families import table as summary_table
from reports.stats import round_ratios, session_spread
from studies import family_report, fresh

CORES = all_cores()         # the contests' fixed count, so that their figures compare across runs
SAMPLES = "samples_per_second"


@dataclass(frozen=True)
class Contender:
    label: str                      # unique within its contest
    name: str                       # an impls name, or a studies.yardsticks name
    source: str = "impl"            # impl | ref
    preset: str = "hw1-q3"
    dtype: str | None = None        # None: the preset's
    threads: int | str = CORES      # a count, or "default": the harness's default setting
    mode: str = "throughput"        # throughput | adam | probe
    busy: bool = False              # measured beside one busy loop (another process)
    optional: bool = False          # absent: left out with the reason, the contest judged without it


@dataclass(frozen=True)
class Comparison:
    label: str
    num: str                        # a contender's label
    den: str | None = None          # None: num's ``metric`` itself is the value judged
    metric: str = SAMPLES


@dataclass(frozen=True)
class Contest:
    name: str
    title: str
    contenders: tuple[Contender, ...]
    comparisons: tuple[Comparison, ...]
    target: float
    op: str = ">="                  # the value must be >= or <= target
    rule: str = "all"               # all: every comparison passes; best: the best one; spread: session medians agree


def _vs(num: str, den: str) -> Comparison:
    return Comparison(f"{num} / {den}", num, den)


def _contests() -> dict[str, Contest]:
    q4 = {"preset": "hw1-q4", "threads": 1}
    floor = [Contender(n, n, optional=n in ("jax-cpu", "sklearn-mlp"))
             for n in ("numpy-batch", "numba-batch", "torch-cpu", "jax-cpu", "sklearn-mlp")]
    ours = ("numpy-batch", "numba-batch", "torch-cpu", "torch-compile")      # the project's minibatch families
    jax = {n: tuple(Contender(c, c, threads=n, optional=c == "jax-cpu") for c in (*ours, "jax-cpu"))
           for n in (CORES, 1)}
    load = [Contender(f"{n} {w}", n, threads="default", busy=w == "loaded")
            for n in ("numpy-batch", "numba-batch", "torch-cpu") for w in ("quiet", "loaded")]
    return {c.name: c for c in (
        Contest("numba-sample", "numba-sample / numba-sample-best, hw1-q4, 1 thread",
                tuple(Contender(f"{n} {d}", n, "ref" if n.endswith("best") else "impl", dtype=d, **q4)
                      for d in ("float32", "float64") for n in ("numba-sample", "numba-sample-best")),
                tuple(_vs(f"numba-sample {d}", f"numba-sample-best {d}") for d in ("float32", "float64")), 0.9),
        Contest("torch-cpu", f"torch-cpu / torch-minimal, hw1-q3, {CORES} threads",
                (Contender("torch-cpu", "torch-cpu"), Contender("torch-minimal", "torch-minimal", "ref")),
                (_vs("torch-cpu", "torch-minimal"),), 0.9),
        Contest("numpy-sample", "numpy-sample / homework-loop, hw1-q4 float64, 1 thread",
                (Contender("numpy-sample", "numpy-sample", **q4), Contender("homework-loop", "homework-loop", "ref", **q4)),
                (_vs("numpy-sample", "homework-loop"),), 0.8),
        Contest("floor", f"the best minibatch family (peers shown, not judged) / gemm-floor, hw1-q3, {CORES} threads",
                (*floor, Contender("gemm-floor", "gemm-floor", "ref")),
                tuple(_vs(c.label, "gemm-floor") for c in floor), 0.5, rule="best"),
        Contest("jax", f"the best project family / jax-cpu, hw1-q3, {CORES} threads",
                jax[CORES], tuple(_vs(n, "jax-cpu") for n in ours), 1.0, rule="best"),
        Contest("jax-1", "the best project family / jax-cpu, hw1-q3, 1 thread (jax too)",
                jax[1], tuple(_vs(n, "jax-cpu") for n in ours), 0.9, rule="best"),
        Contest("adam", f"the optimizer steps' share of a numpy-batch hw1-q3 epoch, {CORES} threads",
                (Contender("numpy-batch adam", "numpy-batch", mode="adam"),),
                (Comparison("adam share", "numpy-batch adam", metric="adam_share"),), 0.15, op="<="),
        Contest("load", "beside one busy loop / quiet, the default threads, hw1-q3",
                tuple(load), tuple(_vs(c.label, c.label.replace("loaded", "quiet")) for c in load if c.busy), 0.8),
        Contest("probe", "the peak probe's session medians (float32 GFLOP/s), one process each",
                (Contender("peak probe", "peak-probe", threads=CORES, mode="probe"),),
                (Comparison("session medians", "peak probe", metric="value"),), 0.15, op="<=", rule="spread"),
    )}


CONTESTS = _contests()


# ---- the schedule and the arithmetic (pure: tests/test_studies_families.py) -------------------------
def rotation(labels, r: int) -> list:
    """Round ``r``'s order (0-based): the contenders rotated by r (A B, B A, A B, ...)."""
    labels = list(labels)
    k = r % len(labels) if labels else 0
    return labels[k:] + labels[:k]


def passes(value: float | None, target: float, op: str) -> bool:
    return value is not None and (value >= target if op == ">=" else value <= target)


def judge(contest: Contest, results: dict[str, list], unavailable: dict[str, str]) -> dict:
    """Each comparison's figures and verdict, and the contest's: PASS, MISS or "not available"."""
    optional = {c.label for c in contest.contenders if c.optional}
    rows = []
    for comp in contest.comparisons:
        missing = [f"{s}: {unavailable[s]}" for s in (comp.num, comp.den) if s in unavailable]
        if missing:
            rows.append({"comparison": comp.label, "verdict": "not available", "why": "; ".join(missing),
                         "optional": comp.num in optional})
            continue
        num = [r.get(comp.metric) if r else None for r in results[comp.num]]
        fig = session_spread(num) if contest.rule == "spread" else round_ratios(
            num, [r.get(comp.metric) if r else None for r in results[comp.den]] if comp.den else None)
        ok = fig["rounds"] > 0 and passes(fig["value"], contest.target, contest.op)
        rows.append({"comparison": comp.label, **fig, "optional": comp.num in optional, "verdict": "PASS" if ok else
                     "MISS" if fig["rounds"] else "not available", **({} if fig["rounds"] else {"why": "no round measured both sides"})})
    judged = [r for r in rows if not (r["verdict"] == "not available" and r.get("optional"))]
    if contest.rule == "best":
        measured = [r for r in judged if r["verdict"] != "not available" and not r["optional"]]   # families only
        best = max(measured, key=lambda r: r["value"], default=None)
        verdict = best["verdict"] if best else "not available"
        value = best["value"] if best else None
    else:
        bad = [r["verdict"] for r in judged if r["verdict"] != "PASS"]
        verdict = "not available" if "not available" in bad or not judged else "MISS" if bad else "PASS"
        values = [r["value"] for r in judged if r.get("value") is not None]
        value = (min if contest.op == ">=" else max)(values) if values else None
    return {"contest": contest.name, "title": contest.title, "target": f"{contest.op} {contest.target:g}",
            "rule": contest.rule, "value": value, "verdict": verdict, "comparisons": rows}


# ---- running -----------------------------------------------------------------------------
@dataclass
class Run:
    rounds: int
    seconds: float
    data_dir: str | None = None
    log: object = print
    failed: list = field(default_factory=list)


def run_worker(c: Contender, run: Run) -> dict:
    """One measurement in a fresh process (and, for a loaded one, a busy loop beside it)."""
    job = {"name": c.name, "source": c.source, "preset": c.preset, "dtype": c.dtype, "threads": c.threads,
           "mode": c.mode, "seconds": run.seconds, "data_dir": run.data_dir}
    env = dict(os.environ)      # as a session's workers get it: the thread pools' settings untouched
    # glibc's heap trimming off, both sides: homework-loop's per-step temporaries would pay 3x in
    # page faults (docs/performance.md, "Optimizers and the textbook loop"); a user's setting wins
    env = {"MALLOC_TRIM_THRESHOLD_": "100000000", "MALLOC_MMAP_THRESHOLD_": "10000000", **env}
    with fresh.busy(1 if c.busy else 0):
        return fresh.run("studies.family_worker:run_job", {"job": job}, env=env, timeout=300 + 20 * run.seconds)


def absent(c: Contender) -> str | None:
    """Why ``c`` cannot run, where the parent can tell without importing a backend."""
    import impls
    from studies import yardsticks
    if c.mode == "probe":
        return None
    if c.source == "ref":
        return yardsticks.missing(c.name)
    return None if c.name in impls.names() else f"{c.name} is not registered in impls (impls/__init__.py)"


def needed(contest: Contest, label: str, unavailable: dict) -> bool:
    """Whether some comparison of ``label`` can still be made: both its sides may run."""
    return any(label in (k.num, k.den) and not {k.num, k.den} & set(unavailable) for k in contest.comparisons)


def run_contest(contest: Contest, run: Run) -> dict:
    """Every round of one contest; returns its measurements, unavailable reasons and verdicts."""
    results = {c.label: [None] * run.rounds for c in contest.contenders}
    unavailable = {c.label: why for c in contest.contenders if (why := absent(c))}
    unavailable.update({c.label: "not measured: nothing to compare it with here" for c in contest.contenders
                        if c.label not in unavailable and not needed(contest, c.label, unavailable)})
    for label, why in unavailable.items():
        run.log(f"  {contest.name}  {label:<24} not available: {why}")
    by_label = {c.label: c for c in contest.contenders}
    began = time.perf_counter()
    for r in range(run.rounds):
        for label in rotation(by_label, r):
            if label in unavailable or not needed(contest, label, unavailable):
                continue
            c, t0 = by_label[label], time.perf_counter()
            res = run_worker(c, run)
            run.log(family_report.line(contest.name, r, run.rounds, c, res, time.perf_counter() - t0))
            if "unavailable" in res:
                unavailable[label] = res["unavailable"]
            elif "error" in res:
                run.failed.append(f"{contest.name} {label} round {r + 1}: {res['error']}")
            else:
                results[label][r] = res
    verdict = judge(contest, results, unavailable)
    run.log(f"{contest.name}: {verdict['verdict']} ({_fmt(verdict['value'], contest)} against {verdict['target']})"
            f" in {time.perf_counter() - began:.0f} s")
    return {"verdict": verdict, "results": results, "unavailable": unavailable,
            "contenders": [asdict(c) for c in contest.contenders]}


def _fmt(value, contest: Contest) -> str:
    return "-" if value is None else f"{value:.1%}" if contest.op == "<=" else f"{value:.3f}"


def cmd_families(args) -> int:
    from benchmarks import datasets
    datasets.load("fashion-mnist", args.data_dir)                 # fail before any measurement
    names = list(dict.fromkeys(args.contest or CONTESTS))
    run = Run(args.rounds, args.seconds, args.data_dir)
    start = family_report.facts(run, names)
    run.log(f"families: {', '.join(names)}; {run.rounds} rounds, {run.seconds:g} s per measurement, each in its own "
            f"process; load average {start['load_start']:.2f}; {start['machine']['cpu_model']}, "
            f"{start['machine']['cpu_cores']} cores, {start['machine']['blas']}")
    contests, folder = {}, Path(args.output_dir) / "families"
    try:
        for name in names:
            contests[name] = run_contest(CONTESTS[name], run)
    except KeyboardInterrupt:
        if contests:                 # the contests finished before Ctrl-C are kept
            run.log(f"written: {', '.join(map(str, family_report.write(start, contests, CONTESTS, folder, run.failed)))}")
        raise
    paths = family_report.write(start, contests, CONTESTS, folder, run.failed)
    run.log(summary_table(contests, CONTESTS))
    run.log(f"written: {', '.join(map(str, paths))}")
    run.log(family_report.track(args.tracking_uri, start, contests, CONTESTS, paths))
    return 1 if run.failed else 0


def add_parser(sub) -> None:
    """The ``families`` subcommand of ``python -m studies``, with the product's option types."""
    from benchmarks.argtypes import positive_float, positive_int
    from benchmarks.cli import add_output_option, add_tracking_option
    p = sub.add_parser("families", help="each family against its best: interleaved rounds, one process per cell",
                       description="Each family against its best: contenders strictly interleaved in "
                                   "rounds, every measurement in a fresh process; PASS or MISS per contest; the "
                                   "summary goes to OUTPUT_DIR/families/, each contest to an MLflow run.")
    p.add_argument("--rounds", type=positive_int, default=5, help="rounds per contest (default: %(default)s)")
    p.add_argument("--contest", action="extend", nargs="+", choices=list(CONTESTS), metavar="NAME",
                   help=f"contests to run (default: all): {', '.join(CONTESTS)}")
    p.add_argument("--seconds", type=positive_float, default=2.0,
                   help="timed seconds per measurement, in 5 passes (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="folder with the four Fashion-MNIST IDX files")
    add_output_option(p)
    add_tracking_option(p)
    p.set_defaults(func=cmd_families)
