"""Command line: ``python -m benchmarks run|bench|report|regress``.

User errors (bad flags, missing data, a configuration an implementation cannot run) print one
short message and exit with status 2; a diverging run exits with status 3 after keeping what
it finished. Nothing here prints a traceback for those.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import impls
from benchmarks import datasets
from benchmarks.config import PRESETS, RunConfig

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class UsageError(Exception):
    """A mistake the user can fix; printed without a traceback, exit status 2."""


# ---- argument types: each names what it wants, argparse names the option -----------------
def _number(parse, ok, wanted: str):
    """An argparse type: ``parse`` the text, accept it when ``ok(value)``, else say what is wanted."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value
    convert.__name__ = wanted
    return convert


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
unit_interval = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def impl_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if text.strip() == "all":
        return impls.names()
    unknown = [n for n in names if n not in impls.names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown implementation {', '.join(map(repr, unknown)) or repr(text)}; "
            f"valid names: {', '.join(impls.names())} (or 'all')")
    return names


def add_config_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that trains."""
    p.add_argument("--dataset", choices=sorted(datasets.DATASETS), default=None,
                   help="dataset (default: the preset's, fashion-mnist)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the four IDX files (default: user cache, then the system copy)")
    p.add_argument("--download", action="store_true",
                   help="download through torchvision when the files are not found (default: off)")
    p.add_argument("--threads", type=positive_int, default=os.cpu_count(),
                   help="threads for BLAS, numba and torch (default: %(default)s, this machine's cores)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="train implementations and print per-epoch results",
                         description="Train one or more implementations on one configuration.")
    run.add_argument("--impl", type=impl_list, default=["numpy-sample"],
                     help=f"comma-separated names or 'all' (default: numpy-sample); one of {', '.join(impls.names())}")
    run.add_argument("--preset", choices=sorted(PRESETS), default="hw1-q4",
                     help="base configuration (default: %(default)s)")
    run.add_argument("--epochs", type=positive_int, help="epochs (default: the preset's)")
    run.add_argument("--batch-size", type=positive_int, help="minibatch size (default: the preset's)")
    run.add_argument("--lr", type=positive_float, help="learning rate (default: the preset's)")
    run.add_argument("--optimizer", choices=impls.OPTIMIZERS, help="optimizer (default: the preset's)")
    run.add_argument("--momentum", type=unit_interval, help="SGD momentum (default: the preset's, 0)")
    run.add_argument("--dtype", choices=impls.DTYPES, help="float32 or float64 (default: the preset's)")
    run.add_argument("--seed", type=int, help="seed of initial weights and sample order (default: 0)")
    run.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                     help="reshuffle every epoch (default: the preset's)")
    run.add_argument("--train-limit", type=positive_int, help="train on the first N samples only")
    run.add_argument("--test-limit", type=positive_int, help="evaluate on the first N test samples only")
    run.add_argument("--output-json", metavar="PATH", help="write per-epoch and summary results here")
    add_config_options(run)
    run.set_defaults(func=cmd_run)

    from benchmarks import commands  # bench, report, regress: their own module
    commands.add_subcommands(sub, add_config_options, impl_list, positive_int)
    return parser


def config_from_args(args, impl: str) -> RunConfig:
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "optimizer": args.optimizer, "momentum": args.momentum, "dtype": args.dtype,
        "seed": args.seed, "shuffle": args.shuffle, "dataset": args.dataset,
        "train_limit": args.train_limit, "test_limit": args.test_limit,
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[args.preset].replace(impl=impl, **changes)


def check_runnable(configs: list[RunConfig]) -> None:
    """Every configuration must be able to run here: checked before any training starts."""
    from benchmarks.runner import make_impl
    problems = []
    for config in configs:
        try:
            make_impl(config)
        except impls.ConfigError as exc:
            problems.append(str(exc))
        except ImportError as exc:
            problems.append(f"{config.impl}: cannot import its backend ({exc})")
    if problems:
        raise UsageError("cannot run:\n  " + "\n  ".join(problems) +
                         "\nChoose other implementations with --impl, or change --batch-size/--dtype.")


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def print_epoch(result, record) -> None:
    print(f"{record.epoch:>5}  {record.train_loss:>10.4f}  {record.test_loss:>9.4f}  "
          f"{record.test_accuracy:>8.4f}  {record.epoch_seconds:>8.2f}  {_fmt_rate(record.samples_per_second):>11}",
          flush=True)


def cmd_run(args) -> int:
    from benchmarks import machine
    from benchmarks.runner import Diverged, train

    configs = [config_from_args(args, name) for name in args.impl]
    check_runnable(configs)
    data = datasets.load(configs[0].dataset, args.data_dir, download_ok=args.download)
    threads = machine.pin_threads(args.threads)
    payload = {"dataset": {"name": data.name, "digest": data.digest, "source": data.source},
               "threads": threads, "machine": machine.inventory(), "results": []}
    print(f"dataset {data.name} from {data.source} (digest {data.digest}); threads {threads}")

    def save():
        if args.output_json:
            with open(args.output_json, "w") as f:
                json.dump(payload, f, indent=2, default=float)

    status = 0
    for config in configs:
        c = config
        print(f"\n{c.impl}: {c.preset}, {'-'.join(map(str, c.sizes))} {c.activation}, {c.dtype}, "
              f"{c.optimizer} lr {c.lr}, batch {c.batch_size}, {c.epochs} epochs, seed {c.seed}")
        print(f"{'epoch':>5}  {'train_loss':>10}  {'test_loss':>9}  {'test_acc':>8}  {'epoch_s':>8}  {'samples/s':>11}")
        try:
            result = train(config, data, on_epoch=print_epoch)
        except Diverged as exc:
            print(f"stopped: {exc}", file=sys.stderr)
            result, status = exc.result, EXIT_DIVERGED
        print(f"first call (JIT compile / start-up), excluded from epoch times: {result.compile_seconds:.3f} s")
        payload["results"].append(result.to_dict())
        save()
    if len(payload["results"]) > 1:
        print_summary(payload["results"])
    return status


def print_summary(results: list[dict]) -> None:
    done = [r for r in results if r["status"] == "finished"]
    base = next((r for r in done if r["impl"] == impls.REFERENCE), done[0] if done else None)
    title = f"speed-up vs {base['impl']}" if base else "speed-up"
    print(f"\n{'implementation':<14}  {'test_acc':>8}  {'samples/s':>11}  {title:>24}  {'compile_s':>9}")
    for r in results:
        s = r["summary"]
        if r["status"] != "finished":
            print(f"{r['impl']:<14}  {r['status']:>8}  {'-':>11}  {'-':>24}  {s['compile_seconds']:>9.3f}")
            continue
        speedup = s["samples_per_second"] / base["summary"]["samples_per_second"]
        print(f"{r['impl']:<14}  {s['test_accuracy']:>8.4f}  {_fmt_rate(s['samples_per_second']):>11}  "
              f"{speedup:>23.2f}x  {s['compile_seconds']:>9.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, datasets.DataError, impls.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if type(exc).__name__ == "TrackingError":  # tracking is imported only by commands that track
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("interrupted; results written so far are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
