"""The bench and report subcommands (regress lives in benchmarks/regress.py)."""
from __future__ import annotations

import argparse
import os

import impls
from benchmarks.config import PRESETS

DEFAULT_OUT = os.path.join("reports", "out")


def _csv(kind, choices=None):
    def parse(text):
        items = [kind(v.strip()) for v in text.split(",") if v.strip()]
        bad = [v for v in items if choices is not None and v not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(map(str, choices or []))}"
                                             f"; got {text!r}")
        return tuple(items)
    return parse


def add_subcommands(sub, add_config_options, impl_list, positive_int):
    from benchmarks.cli import positive_float
    bench = sub.add_parser("bench", help="run a tracked benchmark session and write its report",
                           description="Benchmark session: every available implementation on both presets "
                                       "(accuracy curves), plus a throughput sweep over batch sizes and dtypes. "
                                       "Logged to MLflow; the report goes to --output-dir.")
    bench.add_argument("--impl", type=impl_list, default=None,
                       help="implementations (default: every one available here)")
    bench.add_argument("--presets", type=_csv(str, sorted(PRESETS)), default=("hw1-q4", "hw1-q3"),
                       help="presets trained for accuracy (default: hw1-q4,hw1-q3)")
    bench.add_argument("--batch-sizes", type=_csv(int), default=None,
                       help="throughput sweep batch sizes (default: 1,32,256,1024)")
    bench.add_argument("--dtypes", type=_csv(str, impls.DTYPES), default=None,
                       help="throughput sweep dtypes (default: float32,float64)")
    bench.add_argument("--repeats", type=positive_int, default=None,
                       help="timed repeats per throughput cell (default: 5; at least 3 is sensible)")
    bench.add_argument("--epochs", type=positive_int, default=None, help="override every preset's epochs")
    bench.add_argument("--seeds", type=_csv(int), default=None,
                       help="seeds of the accuracy cells, reported as mean ± std (default: 0)")
    bench.add_argument("--train-limit", type=positive_int, default=None, help="train on the first N samples only")
    bench.add_argument("--repeat-seconds", type=positive_float, default=None,
                       help="target duration of one timed repeat (default: 0.4)")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller matrix: 1 epoch on 20k samples, batches 1 and 256")
    mode.add_argument("--dry-run", action="store_true", help="tiny: every stage once, in seconds (for CI)")
    bench.add_argument("--pytest-benchmark", action=argparse.BooleanOptionalAction, default=True,
                       help="also run the pytest-benchmark suite and attach its JSON (default: on; off with --dry-run)")
    bench.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                       help="run each implementation in its own process, so numba's and torch's thread "
                            "pools never share one (default: on; off starts faster but skews timings)")
    bench.add_argument("--output-dir", default=DEFAULT_OUT, help="report folder (default: %(default)s)")
    add_config_options(bench)
    bench.set_defaults(func=cmd_bench)

    report = sub.add_parser("report", help="write the report of a tracked session",
                            description="Read a session back from MLflow and write report.md, report.html and PNGs.")
    report.add_argument("--run-id", default=None, help="session (parent) run id (default: the latest session)")
    report.add_argument("--output-dir", default=DEFAULT_OUT, help="report folder (default: %(default)s)")
    report.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    report.set_defaults(func=cmd_report)

    from benchmarks import regress
    regress.add_subcommand(sub, add_config_options, impl_list)


def bench_options(args):
    from benchmarks.bench import BenchOptions
    overrides = {k: v for k, v in {
        "impls": tuple(args.impl) if args.impl else None, "presets": args.presets,
        "batch_sizes": args.batch_sizes, "dtypes": args.dtypes, "repeats": args.repeats,
        "epochs": args.epochs, "train_limit": args.train_limit, "repeat_seconds": args.repeat_seconds,
        "dataset": args.dataset, "seeds": args.seeds,
    }.items() if v is not None}
    if args.dry_run:
        return BenchOptions.dry_run(**overrides), "dry-run"
    if args.quick:
        return BenchOptions.quick(**overrides), "quick"
    return BenchOptions(**overrides), "full"


def cmd_bench(args) -> int:
    import tracking
    from benchmarks import datasets
    from benchmarks.bench import run_session
    options, mode = bench_options(args)
    if args.impl:
        available = impls.available()
        blocked = [f"{n}: {available[n]}" for n in args.impl if available[n]]
        if blocked:
            from benchmarks.cli import UsageError
            raise UsageError("cannot run here: " + "; ".join(blocked))
    uri = tracking.resolve_uri(args.tracking_uri)
    tracking.connect(uri)                                   # fail before any training
    data = datasets.load(options.dataset, args.data_dir, download_ok=args.download)
    status, _ = run_session(options, data, uri, args.threads, args.output_dir, mode=mode,
                            pytest_benchmark=args.pytest_benchmark and mode != "dry-run",
                            isolate=args.isolate, data_dir=args.data_dir)
    return status


def cmd_report(args) -> int:
    import tracking
    from benchmarks.report_cmd import render
    render(tracking.resolve_uri(args.tracking_uri), args.run_id, args.output_dir)
    return 0
