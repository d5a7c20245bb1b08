"""The handlers of ``python -m benchmarks`` (the parser is ``benchmarks/cli.py``): each takes
the parsed arguments and returns the exit status."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import impls
import tracking
from benchmarks import datasets
from benchmarks.inventory import inventory
from benchmarks.threads import default_threads, pin_threads
from benchmarks.config import EXIT_DIVERGED, PRESETS, Diverged, RunConfig, UsageError


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: what is finished is kept, the run in flight ends KILLED."""


def on_sigterm(signum, frame):
    raise Terminated("terminated (SIGTERM)")


# where a gate session writes its report
GATE_OUT = os.path.join("reports", "out", "regress")


def writable_folder(path: str | Path, what: str = "--output-dir", create: bool = True) -> Path:
    """``path`` as a folder this process can write into, created when ``create``: proven by
    creating (and removing) a probe file in it, so a folder that cannot take the report is
    refused before any training, not after it. UsageError naming ``what`` otherwise."""
    folder = Path(path).expanduser()
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bpb-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write there ({exc.strerror or exc}); nothing has run. "
                         "Choose a folder you can write to") from None
    return folder


def session_ref(uri: str, ref: str | None, args) -> str:
    """The session ``ref`` names (default ``latest``), with the command's ``--mode`` and
    ``--any-status``; a session left RUNNING by a process that is gone is ended KILLED first."""
    tracking.connect(uri, create=False)
    tracking.reap_stale(uri)
    return tracking.resolve_ref(uri, ref or "latest", args.mode, args.any_status)


def config_from_args(args, impl: str) -> RunConfig:
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "optimizer": args.optimizer, "momentum": args.momentum, "dtype": args.dtype,
        "seed": args.seed, "shuffle": args.shuffle, "dataset": args.dataset,
        "train_limit": args.train_limit, "test_limit": args.test_limit, "tf32": args.tf32,
    }
    return PRESETS[args.preset].replace(impl=impl, **{k: v for k, v in overrides.items() if v is not None})


def runnable_configs(configs: list[RunConfig], everything: bool) -> list[RunConfig]:
    """The configurations that can run here. With ``--impl all`` the others are listed as
    skipped; a named implementation that cannot run is a usage error, before any training."""
    reasons = {c.impl: impls.runnable(c.impl, dtype=c.dtype, batch_size=c.batch_size) for c in configs}
    blocked = [f"{r if r.startswith(n) else f'{n}: {r}'}" for n, r in reasons.items() if r]
    if everything:
        for line in blocked:
            print(f"skipped {line}")
        if len(blocked) < len(configs):
            return [c for c in configs if not reasons[c.impl]]
    if blocked:
        raise UsageError("cannot run:\n  " + "\n  ".join(blocked) +
                         "\nChoose other implementations with --impl, or change --batch-size/--dtype.")
    return configs


def print_epoch(result, record) -> None:
    print(f"{record.epoch:>5}  {record.train_loss:>10.4f}  {record.test_loss:>9.4f}  "
          f"{record.test_accuracy:>8.4f}  {record.epoch_seconds:>8.2f}  {record.samples_per_second:>11,.0f}",
          flush=True)


def cmd_run(args) -> int:
    from benchmarks import runner
    configs = runnable_configs([config_from_args(args, name) for name in args.impl],
                               everything=args.impl == impls.names())
    refused = [f"{c.impl} in {c.dtype}" for c in configs if c.tf32 and not (impls.get(c.impl).takes_tf32
                                                                             and c.dtype == "float32")]
    if refused:
        raise UsageError(f"--tf32 applies to float32 on torch-cuda and torch-cuda-graph only, not to {', '.join(refused)}")
    data = datasets.load(configs[0].dataset, args.data_dir, download_ok=args.download)
    for name in {c.impl for c in configs}:
        impls.get(name)
    threads = pin_threads(args.threads or default_threads()[0])
    payload = {"dataset": {"name": data.name, "digest": data.digest, "source": data.source},
               "threads": threads, "machine": inventory(), "results": []}
    print(f"dataset {data.name} from {data.source} (digest {data.digest}); threads {threads}")
    status = 0
    for c in configs:
        print(f"\n{c.impl}: {c.preset}, {'-'.join(map(str, c.sizes))} {c.activation}, {c.dtype}, "
              f"{c.optimizer} lr {c.lr}, batch {c.batch_size}, {c.epochs} epochs, seed {c.seed}")
        print(f"{'epoch':>5}  {'train_loss':>10}  {'test_loss':>9}  {'test_acc':>8}  {'epoch_s':>8}  {'samples/s':>11}")
        prepared = runner.prepare(c, data)
        try:
            result = runner.train(prepared, data, on_epoch=print_epoch)
        except Diverged as exc:
            print(f"stopped: {exc}", file=sys.stderr)
            result, status = exc.result, EXIT_DIVERGED
        print(f"first call (JIT compile / start-up), excluded from epoch times: {result.compile_seconds:.3f} s")
        payload["results"].append(result.to_dict())
        if args.output_json:
            Path(args.output_json).write_text(json.dumps(payload, indent=2, default=float))
    if len(payload["results"]) > 1:
        print_summary(payload["results"])
    return status


def print_summary(results: list[dict]) -> None:
    done = [r for r in results if r["status"] == "FINISHED"]
    base = next((r for r in done if r["impl"] == impls.SPEEDUP_BASE), done[0] if done else None)
    title = f"speed-up vs {base['impl']}" if base else "speed-up"
    print(f"\n{'implementation':<14}  {'test_acc':>8}  {'samples/s':>11}  {title:>24}  {'compile_s':>9}")
    for r in results:
        s = r["summary"]
        if r["status"] != "FINISHED":
            print(f"{r['impl']:<14}  {r['status']:>8}  {'-':>11}  {'-':>24}  {s['compile_seconds']:>9.3f}")
            continue
        speedup = s["samples_per_second"] / base["summary"]["samples_per_second"]
        print(f"{r['impl']:<14}  {s['test_accuracy']:>8.4f}  {s['samples_per_second']:>11,.0f}  "
              f"{speedup:>23.2f}x  {s['compile_seconds']:>9.3f}")


def cmd_bench(args) -> int:
    from benchmarks.plan import BenchOptions
    from benchmarks.session import run_session
    mode = "dry-run" if args.dry_run else ("quick" if args.quick else "full")
    overrides = {k: v for k, v in {
        "impls": tuple(args.impl) if args.impl else None, "batch_sizes": args.batch_sizes, "dtypes": args.dtypes,
        "repeats": args.repeats, "repeat_seconds": args.repeat_seconds, "seeds": args.seeds,
        "cell_budget": args.cell_budget,
        "dataset": args.dataset}.items() if v is not None}
    options = BenchOptions.make(mode, args.presets, args.epochs, args.train_limit, **overrides)
    blocked = [f"{n}: {impls.available_reason(n)}" for n in args.impl or () if impls.available_reason(n)]
    if blocked:
        raise UsageError("cannot run here: " + "; ".join(blocked))
    writable_folder(args.output_dir)                        # fail before any training: the folder,
    uri = tracking.resolve_uri(args.tracking_uri)
    tracking.connect(uri)                                   # the store,
    data = datasets.load(options.dataset, args.data_dir, download_ok=args.download)      # the data
    status, _ = run_session(options, data, uri, args.threads, args.output_dir, mode=mode,
                            pytest_benchmark=args.pytest_benchmark and mode != "dry-run",
                            isolate=args.isolate, data_dir=args.data_dir, machine_label=args.machine)
    return status


def cmd_report(args) -> int:
    from benchmarks.session import render_report
    uri = tracking.resolve_uri(args.tracking_uri)
    writable_folder(args.output_dir)
    if args.session or args.latest_per_machine:
        from benchmarks.across_machines import run_machines_report
        run_machines_report(uri, args.session, args.output_dir, args.mode, any_status=args.any_status)
        return 0
    render_report(uri, session_ref(uri, args.run_id, args), args.output_dir)
    return 0


def cmd_regress(args) -> int:
    from benchmarks.gate import GateOptions, run_gate
    if args.run_id is None:
        writable_folder(GATE_OUT, "the gate's report folder")
    if args.update:
        writable_folder(Path(args.baseline).expanduser().resolve().parent, "--baseline's folder", create=False)
    options = GateOptions(impls=tuple(args.impl or ()), dataset=args.dataset or "fashion-mnist",
                          speed_band=args.speed_band)
    return run_gate(options, Path(args.baseline), args.speed, args.update, uri=tracking.resolve_uri(args.tracking_uri),
                    threads=args.threads, data_dir=args.data_dir, download=args.download, run_id=args.run_id,
                    machine_label=args.machine, out_dir=GATE_OUT)


def cmd_compare(args) -> int:
    from benchmarks.compare import run_compare
    writable_folder(args.output_dir)
    return run_compare(tracking.resolve_uri(args.tracking_uri), args.a, args.b, args.output_dir, args.fail_on,
                       args.threshold, mode=args.mode, any_status=args.any_status, fail_on_missing=args.fail_on_missing)


def cmd_history(args) -> int:
    from benchmarks.history import ROOT, run_history
    writable_folder(args.output_dir)
    return run_history(tracking.resolve_uri(args.tracking_uri), args.output_dir, args.repo or ROOT,
                       args.commits or args.branch or "HEAD", args.machine, args.cell, args.since, mode=args.mode)


def cmd_look(args) -> int:
    from benchmarks.look import run_look
    writable_folder(args.output_dir)
    uri = tracking.resolve_uri(args.tracking_uri)
    return run_look(uri, session_ref(uri, args.session, args), args.output_dir)


def cmd_ui(args) -> int:
    from benchmarks.look import run_ui
    uri = tracking.resolve_uri(args.tracking_uri)
    return run_ui(uri, args.host, args.port, session_ref(uri, None, args))


def cmd_gpu_check(args) -> int:
    from benchmarks.gpucheck import run_gpu_check
    return run_gpu_check(args)


def cmd_store(args) -> int:
    """``store check|repair``: a tracking store's state, and the repair of a half-built SQLite
    store (``tracking/repair.py``; docs/reliability.md)."""
    uri = tracking.resolve_uri(args.tracking_uri)
    print(tracking.check_store(uri) if args.action == "check" else tracking.repair_store(uri))
    return 0
