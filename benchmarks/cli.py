"""Command line: ``python -m benchmarks run|bench|report|regress|compare|history|look|ui|gpu-check|server|pg|store|fleet-host``.

Every option is checked when it is parsed. User errors (bad flags, missing data, a
configuration an implementation cannot run, an unusable tracking store, a bad baseline) print
one short message and exit with status 2; a diverging run exits 3 after keeping what it
finished; Ctrl-C exits 130. Nothing here prints a traceback for those.

Each handler (``benchmarks/commands.py``) takes the parsed values as keywords, with
``--tracking-uri`` resolved once, here, into ``uri``.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

import impls
import tracking
from benchmarks import commands, datasets
from benchmarks.argtypes import (cell_seconds, csv_of, epoch_count, fraction, impl_list, iso_date, machine_label,
                                 output_dir, output_file, port, positive_float, positive_int, repeat_count, repeat_time,
                                 seed_int, thread_count, unit_interval)
from benchmarks.cli_store import add_fleet_options, add_store_parsers, add_tracking_option
from benchmarks.config import EXIT_INTERRUPTED, EXIT_USAGE, PRESETS, UsageError
from benchmarks.baseline import BASELINE
from benchmarks.regress import MIN_BAND
from reports.text import PrintableStream

DEFAULT_OUT = os.path.join("reports", "out")


def add_data_options(p) -> None:
    p.add_argument("--dataset", choices=sorted(datasets.DATASETS), default=None,
                   help="dataset (default: the preset's, fashion-mnist)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the four IDX files (default: user cache, then the system copy)")
    p.add_argument("--download", action="store_true",
                   help="download through torchvision when the files are not found (default: off)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="threads for BLAS, numba and torch, at most 4 per core (default: chosen from the cores and the load)")


def add_output_option(p) -> None:
    p.add_argument("--output-dir", type=output_dir, default=DEFAULT_OUT,
                   help="folder for the files written, each set in a subfolder of its own (default: %(default)s)")


SESSION_MODES = (*tracking.BENCH_MODES, "regress", "gpu-check")


def add_latest_options(p) -> None:
    """Which sessions ``latest`` and ``latest~N`` count."""
    p.add_argument("--mode", choices=SESSION_MODES, default=None,
                   help="`latest` and `latest~N` count sessions of this mode (default: the mode of the newest "
                        "FINISHED bench session: full, quick or dry-run; a gate is 'regress')")
    p.add_argument("--any-status", action="store_true",
                   help="`latest` and `latest~N` count FAILED and KILLED sessions too (default: FINISHED only)")


def add_machine_option(p) -> None:
    p.add_argument("--machine", type=machine_label, default=None,
                   help="label of this machine in the store, for reports across machines (default: the host name)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="train implementations and print per-epoch results",
                         description="Train one or more implementations on one configuration (not tracked).")
    run.add_argument("--impl", type=impl_list, default=["numpy-sample"],
                     help="comma-separated names, or 'all' for every one that can run the configuration "
                          f"(default: numpy-sample); one of {', '.join(impls.names())}")
    run.add_argument("--preset", choices=sorted(PRESETS), default="hw1-q4", help="base configuration (default: %(default)s)")
    run.add_argument("--epochs", type=epoch_count, help="epochs (default: the preset's; at most 1000)")
    run.add_argument("--batch-size", type=positive_int, help="minibatch size (default: the preset's)")
    run.add_argument("--lr", type=positive_float, help="learning rate (default: the preset's)")
    run.add_argument("--optimizer", choices=impls.OPTIMIZERS, help="optimizer (default: the preset's)")
    run.add_argument("--momentum", type=unit_interval, help="SGD momentum (default: the preset's, 0; sgd only)")
    run.add_argument("--dtype", choices=impls.DTYPES, help="float32 or float64 (default: the preset's)")
    run.add_argument("--seed", type=seed_int, help="seed of initial weights and sample order (default: 0)")
    run.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                     help="reshuffle every epoch (default: the preset's)")
    run.add_argument("--train-limit", type=positive_int, help="train on the first N samples only")
    run.add_argument("--test-limit", type=positive_int, help="evaluate on the first N test samples only")
    run.add_argument("--output-json", metavar="PATH", type=output_file, help="write per-epoch and summary results here")
    run.add_argument("--tf32", action="store_true", default=None,
                     help="float32 matmuls in TF32 on a CUDA implementation (default: off, float32 means float32)")
    run.add_argument("--world-size", type=positive_int,
                     help="torch-ddp's ranks, the batch split across them (default: the threads, at most 4)")
    add_data_options(run)
    run.set_defaults(func=commands.cmd_run)

    bench = sub.add_parser("bench", help="run a tracked benchmark session and write its report",
                           description="Benchmark session: every available implementation on both presets "
                                       "(accuracy curves), plus a throughput sweep over batch sizes and dtypes. "
                                       "Logged to MLflow; the report goes to --output-dir.")
    bench.add_argument("--impl", type=impl_list, default=None, help="implementations (default: every one available here)")
    bench.add_argument("--presets", type=csv_of(str, sorted(PRESETS)), default=("hw1-q4", "hw1-q3"),
                       help="presets trained for accuracy (default: hw1-q4,hw1-q3)")
    bench.add_argument("--batch-sizes", type=csv_of(positive_int), default=None,
                       help="throughput sweep batch sizes (default: 1,32,256,1024)")
    bench.add_argument("--dtypes", type=csv_of(str, impls.DTYPES), default=None,
                       help="throughput sweep dtypes (default: float32,float64)")
    bench.add_argument("--repeats", type=repeat_count, default=None,
                       help="timed repeats per throughput cell, at most 1000, as many as fit the cell budget "
                            "(default: 5; at least 3 is sensible)")
    bench.add_argument("--epochs", type=epoch_count, default=None, help="override every preset's epochs (at most 1000)")
    bench.add_argument("--seeds", type=csv_of(seed_int), default=None,
                       help="seeds of the accuracy cells, reported as mean ± std (default: 0)")
    bench.add_argument("--train-limit", type=positive_int, default=None, help="train on the first N samples only")
    bench.add_argument("--repeat-seconds", type=repeat_time, default=None,
                       help="target duration of one timed repeat, at most 60 (default: 0.4)")
    bench.add_argument("--cell-budget", type=cell_seconds, default=None, metavar="SECONDS",
                       help="most seconds a cell may take: an accuracy cell that would take longer trains on "
                            "fewer samples, and stops early if it still runs over; a throughput cell times "
                            "fewer repeats (at least 3); each is recorded (default: 180, --quick and --dry-run 60)")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller matrix: 1 epoch on 20k samples, batches 1 and 256")
    mode.add_argument("--dry-run", action="store_true", help="tiny: every stage once, in seconds (for CI)")
    bench.add_argument("--pytest-benchmark", action=argparse.BooleanOptionalAction, default=True,
                       help="also run the pytest-benchmark suite and attach its JSON (default: on; off with --dry-run)")
    bench.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=True,
                       help="also time torch-ddp's scaling section: world sizes 1..N against torch-cpu, strong "
                            "and weak (default: on where torch-ddp runs, --impl is not given or names it, and "
                            "there are two cores or more)")
    bench.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                       help="run each implementation in its own process, so numba's and torch's thread "
                            "pools never share one (default: on; off starts faster but skews timings)")
    add_output_option(bench)
    add_data_options(bench)
    add_tracking_option(bench)
    add_machine_option(bench)
    add_fleet_options(bench)
    bench.set_defaults(func=commands.cmd_bench)

    cal = sub.add_parser("calibrate", help="A/A calibration: K sessions of unchanged code, each cell's noise",
                         description="Run the same matrix K times on unchanged code; per throughput cell: the drift "
                                     "between sessions, the false alarms of compare's rule and of the calibrated cut, "
                                     "and the smallest slowdown it can detect. Logged as a run of kind calibration.")
    cal.add_argument("--sessions", type=positive_int, default=5, help="K, the sessions (default: %(default)s)")
    cal.add_argument("--impl", type=impl_list, default=None, help="implementations (default: every one available here)")
    cal.add_argument("--from", dest="reuse", type=csv_of(str), default=None, metavar="ID,ID,...",
                     help="make the profile of these sessions (run ids or latest~N), already run: nothing is trained")
    cal_mode = cal.add_mutually_exclusive_group()
    cal_mode.add_argument("--quick", action="store_true", help="each session as bench --quick")
    cal_mode.add_argument("--dry-run", action="store_true", help="each session as bench --dry-run (the plumbing only)")
    cal_mode.add_argument("--gate", action="store_true", help="each session as the regression gate's: its speed checks")
    for add in (add_output_option, add_data_options, add_tracking_option, add_machine_option):
        add(cal)
    cal.set_defaults(func=commands.cmd_calibrate)

    report = sub.add_parser("report", help="write the report of a tracked session",
                            description="Read a session back from MLflow and write report.md, report.html and PNGs.")
    which = report.add_mutually_exclusive_group()
    which.add_argument("--run-id", default=None,
                       help="session (parent) run id, or 'latest~N' (default: latest, the newest FINISHED session "
                            "of its mode; see --mode, --any-status)")
    which.add_argument("--session", action="append", metavar="REF", default=None,
                       help="machines side by side: one session per machine, the option repeated (an id, "
                            "'latest' or 'latest~N')")
    which.add_argument("--latest-per-machine", action="store_true",
                       help="machines side by side: the latest finished session of every machine in the store")
    add_latest_options(report)
    add_output_option(report)
    add_tracking_option(report)
    report.set_defaults(func=commands.cmd_report)

    regress = sub.add_parser("regress", help="accuracy, parity and speed gate against benchmarks/baseline.json",
                             description="Run the gated cells in a tracked session (or judge an existing one) "
                                         "against the baseline and print cell, check, expected, measured, verdict.")
    regress.add_argument("--baseline", default=str(BASELINE), help="baseline file (default: %(default)s)")
    regress.add_argument("--run-id", default=None, help="judge this existing gate session instead of running one")
    regress.add_argument("--speed", choices=("off", "warn", "fail"), default="warn",
                         help="what a significant slowdown does (default: %(default)s; 'fail' is for a quiet, "
                              "dedicated machine)")
    regress.add_argument("--update", action="store_true",
                         help="rewrite the baseline from this session (only entries that left their band move)")
    regress.add_argument("--impl", type=impl_list, default=None, help="gate only these implementations")
    regress.add_argument("--speed-band", type=fraction, default=MIN_BAND,
                         help="with --update: half-width of new speed bands as a fraction of the ratio "
                              "(default: %(default)s, for shared machines; 0.1 suits a quiet one)")
    add_data_options(regress)
    add_tracking_option(regress)
    add_machine_option(regress)
    regress.set_defaults(func=commands.cmd_regress)

    compare = sub.add_parser("compare", help="compare two sessions cell by cell",
                             description="Compare two sessions: samples/s with B/A and its 95%% bootstrap interval, "
                                         "accuracy and parity, and what differs between them.")
    compare.add_argument("a", metavar="A", help="session id, 'latest' or 'latest~N' (the Nth before the latest)")
    compare.add_argument("b", metavar="B", help="the session compared with A (same forms)")
    compare.add_argument("--fail-on", choices=("slower", "accuracy", "any"), default=None,
                         help="exit 1 when a cell is slower, when accuracy or parity got worse, or either, "
                              "printing the cells and why (default: never; for CI)")
    compare.add_argument("--fail-on-missing", action="store_true",
                         help="exit 1 also when a cell of A is missing from B (default: such cells, and cells "
                              "only in B, are listed but are no failure)")
    add_latest_options(compare)
    compare.add_argument("--threshold", type=fraction, default=0.1,
                         help="smallest change of B/A called faster or slower (default: %(default)s)")
    add_output_option(compare)
    add_tracking_option(compare)
    compare.set_defaults(func=commands.cmd_compare)

    history = sub.add_parser("history", help="every cell across sessions in git order, with its steps",
                             description="Every cell's samples/s, accuracy and time-to-target across sessions, "
                                         "ordered by git history, with change points found and marked.")
    history.add_argument("--machine", default=None, help="only sessions of this machine: its --machine label or host name (default: all)")
    history.add_argument("--cell", default=None, help="only cells whose name contains this (wildcards allowed)")
    history.add_argument("--since", type=iso_date, default=None,
                         help="only sessions started on or after this date (YYYY-MM-DD)")
    history.add_argument("--mode", choices=SESSION_MODES, default=None,
                         help="only sessions of this mode (default: every mode, each its own series)")
    span = history.add_mutually_exclusive_group()
    span.add_argument("--branch", default=None, help="the branch whose history orders the sessions (default: HEAD)")
    span.add_argument("--commits", default=None, metavar="A..B", help="a commit range instead of a branch")
    history.add_argument("--repo", default=None, help="the git repository (default: this one)")
    add_output_option(history)
    add_tracking_option(history)
    history.set_defaults(func=commands.cmd_history)

    look = sub.add_parser("look", help="screenshots of a session's report and of the MLflow UI (headless Chromium)")
    look.add_argument("session", nargs="?", default="latest", help="session id, 'latest' or 'latest~N' (default: latest)")
    add_latest_options(look)
    look.add_argument("--output-dir", type=output_dir, default=os.path.join("reports", "out", "look"),
                      help="folder for the screenshots (default: %(default)s)")
    add_tracking_option(look)
    look.set_defaults(func=commands.cmd_look)
    ui = sub.add_parser("ui", help="the MLflow UI on the tracking store; prints the address of the latest session")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    ui.add_argument("--port", type=port, default=5000, help="port (default: %(default)s)")
    add_latest_options(ui)
    add_tracking_option(ui)
    ui.set_defaults(func=commands.cmd_ui)
    gpu_check = sub.add_parser("gpu-check", help="the device check: GPU tests, a quick GPU session, its table",
                               description="On a CUDA GPU: pytest -m gpu, a quick session of torch-cpu, torch-cuda and "
                                           "torch-cuda-graph, one table (docs/gpu.md). Exit 4 without a GPU.")
    gpu_check.add_argument("--tests", action=argparse.BooleanOptionalAction, default=True,
                           help="run the GPU tests first (default: on)")
    gpu_check.add_argument("--data-dir", default=None,
                           help="folder with the four Fashion-MNIST IDX files (default: user cache, then the system copy)")
    gpu_check.add_argument("--threads", type=thread_count, default=None,
                           help="threads for BLAS, numba and torch (default: chosen from the cores and the load)")
    add_output_option(gpu_check)
    add_tracking_option(gpu_check)
    gpu_check.set_defaults(func=commands.cmd_gpu_check)

    add_store_parsers(sub)
    return parser


def handler_values(args: argparse.Namespace) -> dict:
    """The parsed options as the handler's keywords; ``--tracking-uri`` becomes ``uri``, the
    one place the tracking URI is resolved (``tracking.resolve_uri``)."""
    values = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    if "tracking_uri" in values:
        values["uri"] = tracking.resolve_uri(values.pop("tracking_uri"))
    return values


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, commands.on_sigterm)
    sys.stdout.reconfigure(line_buffering=True)      # progress lines reach a pipe (CI logs) as printed
    # every line printed passes through one filter: text from the store never reaches the
    # terminal as a control sequence (reports/text.py)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(sys.stdout), PrintableStream(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = streams


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "optimizer", None) == "adam" and getattr(args, "momentum", None):
        parser.error("--momentum applies to sgd only; drop it, or use --optimizer sgd")
    try:
        return args.func(**handler_values(args))
    except (UsageError, datasets.DataError, impls.ConfigError, tracking.TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"{str(exc) or 'interrupted'}; results written so far are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:   # a full disk, a file that vanished: the session recorded it FAILED
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}; results written "
              "so far are kept", file=sys.stderr)
        return 1
    except Exception as exc:  # the tracking store failing mid-way (tracking/failure.py): one line, exit 2
        cause = tracking.store_failure(exc)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return EXIT_USAGE
