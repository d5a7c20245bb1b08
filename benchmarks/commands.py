"""The handlers of ``python -m benchmarks`` (the parser is ``benchmarks/cli.py``): each takes
the parsed values as keywords (``--tracking-uri`` resolved into ``uri``), connects the
tracking store once where it needs one, and returns the exit status."""
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


def session_ref(store: tracking.Store, ref: str | None, mode: str | None, any_status: bool) -> str:
    """The session ``ref`` names (default ``latest``), with the command's ``--mode`` and
    ``--any-status``; a session left RUNNING by a process that is gone is ended KILLED first."""
    tracking.reap_stale(store)
    return tracking.resolve_ref(store, ref or "latest", mode, any_status)


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


def cmd_run(*, impl: list[str], preset: str, data_dir, download: bool, threads: int | None, output_json,
            **overrides) -> int:
    """``run``: ``overrides`` are the RunConfig fields given on the command line (None: the preset's)."""
    from benchmarks import runner
    base = PRESETS[preset].replace(**{k: v for k, v in overrides.items() if v is not None})
    configs = runnable_configs([base.replace(impl=name) for name in impl], everything=impl == impls.names())
    refused = [f"{c.impl} in {c.dtype}" for c in configs if c.tf32 and not (impls.get(c.impl).takes_tf32
                                                                             and c.dtype == "float32")]
    if refused:
        raise UsageError(f"--tf32 applies to float32 on torch-cuda and torch-cuda-graph only, not to {', '.join(refused)}")
    refused = [c.impl for c in configs if c.world_size is not None and not impls.get(c.impl).takes_world_size]
    if refused:
        raise UsageError(f"--world-size applies to torch-ddp only, not to {', '.join(refused)}")
    data = datasets.load(configs[0].dataset, data_dir, download_ok=download)
    for name in {c.impl for c in configs}:
        impls.get(name)
    threads = pin_threads(threads or default_threads()[0])
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
        if output_json:
            Path(output_json).write_text(json.dumps(payload, indent=2, default=float))
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


def cmd_bench(*, impl, presets, batch_sizes, dtypes, repeats, epochs, seeds, train_limit, repeat_seconds,
              cell_budget, quick: bool, dry_run: bool, pytest_benchmark: bool, isolate: bool, scaling: bool,
              output_dir: str,
              dataset, data_dir, download: bool, threads: int | None, uri: str, machine: str | None,
              ray: str | None = None, hosts: str = "all") -> int:
    from benchmarks.plan import BenchOptions
    from benchmarks.session import SessionSettings, run_session
    mode = "dry-run" if dry_run else ("quick" if quick else "full")
    overrides = {k: v for k, v in {
        "impls": tuple(impl) if impl else None, "batch_sizes": batch_sizes, "dtypes": dtypes,
        "repeats": repeats, "repeat_seconds": repeat_seconds, "seeds": seeds, "cell_budget": cell_budget,
        "dataset": dataset, "scaling": scaling}.items() if v is not None}
    options = BenchOptions.make(mode, presets, epochs, train_limit, **overrides)
    blocked = [f"{n}: {impls.available_reason(n)}" for n in impl or () if impls.available_reason(n)]
    if blocked:
        raise UsageError("cannot run here: " + "; ".join(blocked))
    if hosts != "all" and not ray:
        raise UsageError(f"--hosts {hosts} shares the matrix among a fleet's hosts: it needs --ray ADDRESS")
    if ray:
        from benchmarks import fleet
        fleet.check_first(ray, uri, machine)
    writable_folder(output_dir)                             # fail before any training: the folder,
    store = tracking.connect(uri)                           # the store,
    data = datasets.load(options.dataset, data_dir, download_ok=download)      # the data
    settings = SessionSettings(mode=mode, out_dir=output_dir, threads=threads, isolate=isolate, data_dir=data_dir,
                               pytest_benchmark=pytest_benchmark and mode != "dry-run", machine_label=machine)
    if ray:
        return fleet.run_fleet(ray, options, data, store, settings, shard=hosts == "shard")
    status, _ = run_session(options, data, store, settings)
    return status


def cmd_report(*, run_id, session, latest_per_machine: bool, mode, any_status: bool, output_dir: str,
               uri: str) -> int:
    from benchmarks.session import render_report
    writable_folder(output_dir)
    store = tracking.connect(uri, create=False)
    if session or latest_per_machine:
        from benchmarks.across_machines import run_machines_report
        run_machines_report(store, session, output_dir, mode, any_status=any_status)
        return 0
    render_report(store, session_ref(store, run_id, mode, any_status), output_dir)
    return 0


def cmd_regress(*, baseline: str, run_id, speed: str, update: bool, impl, speed_band: float, dataset, data_dir,
                download: bool, threads: int | None, uri: str, machine: str | None) -> int:
    from benchmarks.baseline import load_baseline
    from benchmarks.gate import GateOptions, run_gate
    if run_id is None:
        writable_folder(GATE_OUT, "the gate's report folder")
    if update:
        writable_folder(Path(baseline).expanduser().resolve().parent, "--baseline's folder", create=False)
    options = GateOptions(impls=tuple(impl or ()), dataset=dataset or "fashion-mnist", speed_band=speed_band)
    loaded = load_baseline(Path(baseline), missing_ok=update)                  # before any store or work
    store = tracking.connect(uri, create=run_id is None)
    return run_gate(options, Path(baseline), speed, update, store=store, baseline=loaded, threads=threads,
                    data_dir=data_dir, download=download, run_id=run_id, machine_label=machine, out_dir=GATE_OUT)


def cmd_calibrate(*, sessions: int, reuse, impl, quick: bool, dry_run: bool, gate: bool, output_dir: str, dataset,
                  data_dir, download: bool, threads: int | None, uri: str, machine: str | None) -> int:
    from benchmarks.calibrate import make_profile, run_calibrate
    from benchmarks.gate import GateOptions
    from benchmarks.plan import BenchOptions
    from benchmarks.session import SessionSettings
    if sessions < 2 or (reuse and len(reuse) < 2):
        raise UsageError("calibrate needs at least 2 sessions (--sessions, --from): a drift needs two")
    if reuse:                               # the profile of sessions already run: nothing is trained
        writable_folder(output_dir)
        store = tracking.connect(uri, create=False)
        return make_profile(store, [tracking.resolve_ref(store, ref, None, False) for ref in reuse], output_dir)
    mode = "regress" if gate else "dry-run" if dry_run else ("quick" if quick else "full")
    if gate:                                # the gate's matrix, as `regress` runs it
        options = GateOptions(**{k: v for k, v in {"impls": tuple(impl) if impl else None,
                                                   "dataset": dataset}.items() if v is not None}).matrix()
    else:
        options = BenchOptions.make(mode, **{k: v for k, v in {"impls": tuple(impl) if impl else None,
                                                               "dataset": dataset}.items() if v is not None},
                                    scaling=False)
    writable_folder(output_dir)
    store = tracking.connect(uri)
    data = datasets.load(options.dataset, data_dir, download_ok=download)
    settings = SessionSettings(mode=mode, out_dir=output_dir, threads=threads, data_dir=data_dir, machine_label=machine)
    return run_calibrate(store, options, data, settings, sessions)


def cmd_compare(*, a: str, b: str, fail_on, fail_on_missing: bool, mode, any_status: bool, threshold: float,
                output_dir: str, uri: str) -> int:
    from benchmarks.compare import run_compare
    writable_folder(output_dir)
    return run_compare(tracking.connect(uri, create=False), a, b, output_dir, fail_on, threshold, mode=mode,
                       any_status=any_status, fail_on_missing=fail_on_missing)


def cmd_history(*, machine, cell, since, mode, branch, commits, repo, output_dir: str, uri: str) -> int:
    from benchmarks.history import ROOT, git_order, run_history
    writable_folder(output_dir)
    revisions = commits or branch or "HEAD"
    order = git_order(repo or ROOT, revisions)             # a revision git refuses is named before the store
    return run_history(tracking.connect(uri, create=False), output_dir, order, revisions, machine, cell, since,
                       mode=mode)


def cmd_look(*, session: str, mode, any_status: bool, output_dir: str, uri: str) -> int:
    from benchmarks.look import run_look
    writable_folder(output_dir)
    store = tracking.connect(uri, create=False)
    return run_look(store, session_ref(store, session, mode, any_status), output_dir)


def cmd_ui(*, host: str, port: int, mode, any_status: bool, uri: str) -> int:
    from benchmarks.look import run_ui
    store = tracking.connect(uri, create=False)
    return run_ui(store, host, port, session_ref(store, None, mode, any_status))


def cmd_gpu_check(*, tests: bool, data_dir, threads: int | None, output_dir: str, uri: str) -> int:
    from benchmarks import gpucheck
    reason = gpucheck.no_gpu_reason()
    if reason:
        print(f"gpu-check: {reason}", file=sys.stderr)
        return gpucheck.EXIT_NO_GPU
    store = tracking.connect(uri)                           # fail before any work
    return gpucheck.run_gpu_check(store, out_dir=output_dir, data_dir=data_dir, threads=threads, tests=tests)


def cmd_store(*, action: str, uri: str) -> int:
    """``store check|repair``: a tracking store's state, and the repair of a half-built SQLite
    store (``tracking/repair.py``; docs/reliability.md)."""
    print(tracking.check_store(uri) if action == "check" else tracking.repair_store(uri))
    return 0


def cmd_server(**options) -> int:
    """``server``: ``options`` are ``tracking.server.ServerOptions``' fields."""
    from tracking import server
    return server.run(server.ServerOptions(**options))


def cmd_pg(*, action: str, pg_dir, pg_port: int, pg_database: str) -> int:
    """``pg start|stop|status``: the local PostgreSQL in a folder (``tracking/pg.py``)."""
    from tracking import pg
    cluster = pg.Cluster(pg_dir, pg_port)
    if action == "start":
        started = cluster.start(pg_database)
        print(f"PostgreSQL {'started' if started else 'already running'} in {cluster.folder}")
        print(f"backend store URI: {cluster.uri(pg_database)}")
    elif action == "stop":
        print(f"PostgreSQL in {cluster.folder} {'stopped' if cluster.stop() else 'was not running'}")
    else:
        state = "running" if cluster.running() else ("stopped" if cluster.initialised() else "not created yet")
        print(f"PostgreSQL in {cluster.folder}: {state}")
        if state == "running":
            print(f"backend store URI: {cluster.uri(pg_database)}")
        return 0 if state == "running" else 3
    return 0


def cmd_fleet_host(*, label: str, head: bool, address: str | None, port: int) -> int:
    from benchmarks.fleet import start_host
    return start_host(label, None if head else address, port)
