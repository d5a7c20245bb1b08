"""A benchmark session: plan a matrix of cells, validate, warm up and time each, track it all.

Two kinds of cell, both from the same RunConfig:

- accuracy: the preset trained to the end, an accuracy curve per epoch, time-to-target;
- throughput: steady-state training speed over ``repeats`` timed passes of a fixed number of
  samples (chosen so one pass takes about ``repeat_seconds``), reported as median and IQR.

Every cell goes through the same steps: first-call cost on a throwaway instance (JIT
compile, CUDA start-up), a one-step parity check against the float64 reference (a cell that
fails it is recorded FAILED and never timed), then the timed work. Peak float32 GEMM speed is
measured once per session; each cell's achieved FLOP/s over it is its ``roofline_fraction``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import impls
from benchmarks import machine
from benchmarks.config import PRESETS, RunConfig
from benchmarks.runner import (Diverged, epoch_order, impl_kwargs, loss_diverged, make_impl,
                               measure_first_call, train)

EXAMPLE_INDICES = (0, 1, 2)   # the homework's three test images: ankle boot, pullover, trouser


@dataclass(frozen=True)
class BenchOptions:
    impls: tuple[str, ...] = ()                      # empty: every available implementation
    presets: tuple[str, ...] = ("hw1-q4", "hw1-q3")
    batch_sizes: tuple[int, ...] = (1, 32, 256, 1024)
    dtypes: tuple[str, ...] = ("float32", "float64")
    sweep_preset: str = "hw1-q4"                     # the network of the throughput sweep
    repeats: int = 5
    repeat_seconds: float = 0.4
    dataset: str = "fashion-mnist"
    seeds: tuple[int, ...] = (0,)                    # accuracy cells run once per seed
    paired_reference: bool = False                   # time numpy-sample between the repeats (regress)
    epochs: int | None = None                        # None: each preset's own
    train_limit: int | None = None
    test_limit: int | None = None

    @classmethod
    def quick(cls, **kw) -> "BenchOptions":
        """A few minutes less: one epoch on 20k samples, batches 1 and 256, 3 repeats."""
        base = dict(batch_sizes=(1, 256), repeats=3, repeat_seconds=0.25, epochs=1, train_limit=20000)
        return cls(**{**base, **kw})

    @classmethod
    def dry_run(cls, **kw) -> "BenchOptions":
        """Everything once, tiny: checks the pipeline end to end in seconds."""
        base = dict(batch_sizes=(1, 32), dtypes=("float32",), repeats=3, repeat_seconds=0.02, epochs=1,
                    train_limit=512, test_limit=256)
        return cls(**{**base, **kw})


@dataclass(frozen=True)
class Cell:
    kind: str            # accuracy | throughput
    config: RunConfig

    @property
    def name(self) -> str:
        c = self.config
        return f"{self.kind}/{c.impl}/{c.preset}/{c.dtype}/b{c.batch_size}/s{c.seed}"


@dataclass
class CellOutcome:
    cell: Cell
    status: str = "FINISHED"
    reason: str | None = None
    summary: dict = field(default_factory=dict)
    proba: np.ndarray | None = None


def plan(options: BenchOptions, available: dict[str, str | None]) -> tuple[list[Cell], list[str]]:
    """The cells to run, and a line per implementation or cell skipped, with its reason."""
    names = list(options.impls) or impls.names()
    skipped = [f"{n}: {available[n]}" for n in names if available.get(n)]
    runnable = [n for n in names if not available.get(n)]
    cells: list[Cell] = []

    def base(preset: str) -> RunConfig:
        c = PRESETS[preset].replace(dataset=options.dataset, seed=options.seeds[0],
                                    train_limit=options.train_limit, test_limit=options.test_limit)
        return c.replace(epochs=options.epochs) if options.epochs else c

    for preset in options.presets:
        for name in runnable:
            config = base(preset).replace(impl=name)
            reason = impls.get(name).supports(dtype=config.dtype, batch_size=config.batch_size)
            if reason:
                skipped.append(f"accuracy/{name}/{preset}: {reason}")
            else:
                cells.extend(Cell("accuracy", config.replace(seed=seed)) for seed in options.seeds)
    sweep_presets = [options.sweep_preset] + [p for p in options.presets if p != options.sweep_preset]
    for preset in sweep_presets:
        # the full sweep on one network; elsewhere the numpy-sample baseline only (speed-ups)
        sweep_names = runnable if preset == options.sweep_preset else [n for n in runnable if n == impls.REFERENCE]
        for name in sweep_names:
            cls = impls.get(name)
            for dtype in options.dtypes:
                for batch in options.batch_sizes:
                    if cls.supports(dtype=dtype, batch_size=batch):
                        continue   # e.g. the -sample implementations above batch 1: not a cell at all
                    cells.append(Cell("throughput", base(preset).replace(impl=name, dtype=dtype, batch_size=batch)))
    return cells, skipped


def peak_gemm_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """Best float32 GEMM rate numpy reaches here (BLAS as configured, threads as pinned)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best / 1e9


def parity_error(cls, spec, params, config: RunConfig, x, y) -> float:
    """One optimizer step on one batch, against the float64 reference: max relative error."""
    from impls.numpy_sample import reference_train
    order = np.arange(min(config.batch_size, len(x)), dtype=np.int64)
    net = cls(spec, params, **impl_kwargs(config))
    net.train_epoch(x, y, order)
    want, _ = reference_train(spec, params, x.astype(np.float64), y, order, lr=config.lr,
                              batch_size=config.batch_size, optimizer=config.optimizer,
                              momentum=config.momentum)
    return impls.parity_error(net.get_params(), want)


def quartiles(values) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(q1), float(med), float(q3)


class _Timed:
    """One network timed over fixed-length passes; the length is calibrated (untimed) so that
    one pass takes about ``seconds``."""

    def __init__(self, net, config: RunConfig, x, y, seconds: float):
        self.net, self.config, self.x, self.y = net, config, x, y
        B = config.batch_size
        probe = min(len(x), max(4 * B, 256))
        t0 = time.perf_counter()
        net.train_epoch(x, y, epoch_order(len(x), config.seed, 0, True)[:probe])
        rate = probe / max(time.perf_counter() - t0, 1e-9)
        self.n = int(min(len(x), max(B, math.ceil(rate * seconds / B) * B)))

    def rate(self, repeat: int) -> float:
        order = epoch_order(len(self.x), self.config.seed, repeat, True)[:self.n]
        t0 = time.perf_counter()
        loss = self.net.train_epoch(self.x, self.y, order)
        seconds = time.perf_counter() - t0
        if loss_diverged(loss, self.net.spec.sizes[-1]):
            raise Diverged(f"{self.config.impl} diverged in throughput repeat {repeat}: loss {loss:.4g}", None)
        return self.n / seconds


def measure_throughput(cls, spec, params, config: RunConfig, x, y, repeats: int, repeat_seconds: float,
                       paired: bool = False) -> tuple[list[float], list[float]]:
    """Samples/s of ``repeats`` timed passes, and with ``paired`` the reference's samples/s in
    passes alternating with them (same process, same moment: drift cancels in the ratio)."""
    timed = _Timed(cls(spec, params, **impl_kwargs(config)), config, x, y, repeat_seconds)
    ref = None
    if paired and config.impl != impls.REFERENCE:
        ref_config = config.replace(impl=impls.REFERENCE, batch_size=1)
        ref_cls = impls.get(impls.REFERENCE)
        ref = _Timed(ref_cls(spec, params, **impl_kwargs(ref_config)), ref_config, x, y, repeat_seconds)
    rates, ref_rates = [], []
    for r in range(1, repeats + 1):
        if ref is not None:
            ref_rates.append(ref.rate(r))
        rates.append(timed.rate(r))
    return rates, ref_rates


def cell_tags(cell: Cell, inventory: dict) -> dict:
    c = cell.config
    cls = impls.get(c.impl)
    return {**{f"machine.{k}": v for k, v in inventory.items()},
            "bpb.cell": cell.name, "bpb.cell_kind": cell.kind, "implementation": c.impl,
            "device": cls.device, "dtype": c.dtype, "preset": c.preset, "batch_size": c.batch_size,
            "git_commit": inventory.get("git_commit", "unknown")}


def run_cell(cell: Cell, data, track, peak_gflops: float, options: BenchOptions) -> CellOutcome:
    """Validate, warm up, time; logs into ``track`` (a tracking.CellRun) as it goes."""
    c = cell.config
    out = CellOutcome(cell)
    cls, spec, params = make_impl(c)
    x = data.features("train", c.dtype, c.train_limit)
    y = data.labels("train", c.train_limit)
    flops = impls.flops_per_sample(spec)
    compile_s = measure_first_call(cls, spec, params, c, x, y)
    err = parity_error(cls, spec, params, c, x, y)
    tol = impls.PARITY_TOLERANCE[c.dtype]
    track.log({"compile_seconds": compile_s, "parity_max_error": err, "flops_per_sample": flops,
               "peak_gemm_gflops": peak_gflops})
    out.summary.update(compile_seconds=compile_s, parity_max_error=err)
    if not err <= tol:
        out.status, out.reason = "FAILED", f"parity check failed: max relative error {err:.3g} > {tol:g} ({c.dtype})"
        track.fail(out.reason)
        return out
    if cell.kind == "throughput":
        rates, ref_rates = measure_throughput(cls, spec, params, c, x, y, options.repeats, options.repeat_seconds,
                                              paired=options.paired_reference)
        for r, rate in enumerate(rates, start=1):
            track.log({"samples_per_second": rate}, step=r)
        for r, (rate, ref_rate) in enumerate(zip(rates, ref_rates), start=1):
            track.log({"reference_samples_per_second": ref_rate, "speed_ratio": rate / ref_rate}, step=r)
        if ref_rates:
            out.summary["speed_ratio_median"] = float(np.median(np.divide(rates, ref_rates)))
    else:
        def on_epoch(result, record):
            track.log({**asdict(record), "train_seconds": sum(e.epoch_seconds for e in result.epochs)},
                      step=record.epoch)
        result = train(c, data, on_epoch=on_epoch)   # Diverged propagates: the cell fails
        rates = [e.samples_per_second for e in result.epochs]
        out.proba = result.final_proba
        out.summary.update(test_accuracy=result.final_accuracy,
                           time_to_target_seconds=result.time_to_target_seconds)
        if result.time_to_target_seconds is None:
            track.log(tags={"bpb.time_to_target": f"not reached ({c.target_accuracy:g})"})
    q1, med, q3 = quartiles(rates)
    out.summary.update(samples_per_second_median=med, samples_per_second_q1=q1, samples_per_second_q3=q3,
                       roofline_fraction=med * flops / (peak_gflops * 1e9), repeats=len(rates))
    # test_accuracy is already logged per epoch; logging it again would add a step-0 point
    track.log({k: v for k, v in out.summary.items()
               if k not in ("compile_seconds", "parity_max_error", "test_accuracy")})
    return out


def progress(total: int):
    """A tqdm bar on a terminal; silent in CI and when output is piped."""
    from tqdm import tqdm
    quiet = bool(os.environ.get("CI")) or not sys.stderr.isatty()
    return tqdm(total=total, desc="bench", disable=quiet, unit="cell", leave=False)


def examples_payload(data, outcomes: list[CellOutcome]) -> dict:
    """The homework's picture as data: three test images and each accuracy cell's predictions
    (``outcome.proba`` holds the rows of EXAMPLE_INDICES only)."""
    idx = list(EXAMPLE_INDICES)
    return {
        "classes": list(data.classes),
        "indices": idx,
        "labels": [int(v) for v in data.y_test[idx]],
        "images": [data.x_test[i].tolist() for i in idx],
        "predictions": {o.cell.name: np.round(o.proba, 6).tolist() for o in outcomes
                        if o.proba is not None and o.status == "FINISHED"},
        "accuracy": {o.cell.name: o.summary.get("test_accuracy") for o in outcomes if o.proba is not None},
    }


def run_group(cells: list[Cell], session, data, peak: float, options: BenchOptions, emit) -> None:
    """Run ``cells`` in this process, logging into ``session``; ``emit(outcome)`` after each."""
    import tracking
    inventory = machine.inventory()
    train_x = data.features("train", "float32", options.train_limit)
    dataset = tracking.numpy_dataset(train_x, data.labels("train", options.train_limit), name=data.name,
                                     digest=data.digest, source=data.source)
    for cell in cells:
        outcome = CellOutcome(cell)
        with session.cell(cell.name, params=asdict(cell.config) | {"cell_kind": cell.kind},
                          tags=cell_tags(cell, inventory), dataset=dataset) as track:
            outcome = run_cell(cell, data, track, peak, options)
        if track.failed:
            outcome.status, outcome.reason = "FAILED", track.failed
        if outcome.proba is not None:
            outcome.proba = outcome.proba[list(EXAMPLE_INDICES)]
        emit(outcome)


def _worker(conn, job: dict) -> None:
    """A spawned process running one implementation's cells, so that no other backend's
    thread pool is alive beside it. Reports ("cell", outcome) ..., then ("done" | "interrupted"
    | "error", detail)."""
    import importlib
    import traceback
    import tracking
    from benchmarks import datasets
    try:
        if job["setup"]:                         # test hook (BenchOptions.worker_setup), never a CLI flag
            module, func = job["setup"].split(":")
            getattr(importlib.import_module(module), func)()
        data = datasets.load(job["dataset"], job["data_dir"])
        for cell in job["cells"]:
            impls.get(cell.config.impl)
        machine.pin_threads(job["threads"])
        session = tracking.Session.attach(job["uri"], job["run_id"])
        run_group(job["cells"], session, data, job["peak"], job["options"], emit=lambda o: conn.send(("cell", o)))
        conn.send(("done", None))
    except KeyboardInterrupt:
        conn.send(("interrupted", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(cells: list[Cell], job: dict, on_outcome, on_error) -> None:
    """Run ``cells`` in a fresh spawned process; KeyboardInterrupt if it was interrupted."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(send, {**job, "cells": cells}), name=f"bench-{cells[0].config.impl}")
    proc.start()
    send.close()
    reported = 0
    try:
        while True:
            try:
                kind, value = receive.recv()
            except EOFError:
                proc.join()
                kind, value = "error", f"worker process died (exit code {proc.exitcode})"
            if kind == "cell":
                reported += 1
                on_outcome(value)
                continue
            break
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
    if kind == "interrupted":
        raise KeyboardInterrupt
    if kind == "error":
        reason = value.strip().splitlines()[-1] if value.strip() else "worker failed"
        for cell in cells[reported:]:
            on_outcome(CellOutcome(cell, status="FAILED", reason=f"worker: {reason}"))
        on_error(value)


def run_session(options: BenchOptions, data, uri: str, threads: int, out_dir: str, mode: str = "full",
                pytest_benchmark: bool = False, isolate: bool = True, worker_setup: str | None = None,
                data_dir: str | None = None, cells: list[Cell] | None = None, skipped: list[str] | None = None,
                log=print) -> tuple[int, str]:
    """Run every cell (``plan(options)`` unless ``cells`` is given) inside one tracked session;
    returns (exit status, session run id).

    With ``isolate`` (the default) each implementation's cells run in a fresh process: numba's
    and torch's OpenMP pools slowed each other 1.5-6x when they shared one (PERF-NOTES, and
    measured again here). ``worker_setup`` ("module:function") runs first in each worker; it
    exists for the fault-injection tests.
    """
    import tracking
    if cells is None:
        cells, skipped = plan(options, impls.available())
    skipped = skipped or []
    settings = machine.pin_threads(threads)
    inventory = machine.inventory()
    peak = peak_gemm_gflops()
    session = tracking.Session.start(uri, name=f"bench-{mode}-{time.strftime('%Y%m%d-%H%M%S')}",
                                     params={**{f"option.{k}": v for k, v in asdict(options).items()},
                                             "mode": mode, "threads": threads, "isolate": isolate},
                                     tags={**{f"machine.{k}": v for k, v in inventory.items()},
                                           "git_commit": inventory["git_commit"],
                                           "dataset": data.name, "dataset_digest": data.digest})
    session.log(metrics={"peak_gemm_gflops": peak, "cells_planned": len(cells)},
                tags={"bpb.skipped": "; ".join(skipped) or "none"})
    log(f"session {session.run_id} in {uri}: {len(cells)} cells, peak float32 GEMM {peak:.0f} GFLOP/s, "
        f"threads {threads} ({settings}), {'one process per implementation' if isolate else 'one process'}")
    for line in skipped:
        log(f"  skipped {line}")
    outcomes: list[CellOutcome] = []
    bar = progress(total=len(cells))

    def on_outcome(outcome):
        outcomes.append(outcome)
        bar.update(1)
        log(describe(outcome))

    def on_worker_error(details):
        session.client.log_text(session.run_id, details, f"worker-errors/{len(outcomes)}.txt")
        close_orphans(session, "FAILED", "its worker process failed")

    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.config.impl, []).append(cell)
    job = {"uri": uri, "run_id": session.run_id, "dataset": data.name, "data_dir": data_dir,
           "threads": threads, "peak": peak, "options": options, "setup": worker_setup}
    try:
        for impl_cells in groups.values():
            if isolate:
                run_isolated(impl_cells, job, on_outcome, on_worker_error)
            else:
                for name in {c.config.impl for c in impl_cells}:
                    impls.get(name)
                machine.pin_threads(threads)
                run_group(impl_cells, session, data, peak, options, emit=on_outcome)
        bar.close()
        failed = [o for o in outcomes if o.status != "FINISHED"]
        session.log(metrics={"cells_failed": len(failed), "cells_finished": len(outcomes) - len(failed)})
        session.client.log_dict(session.run_id, examples_payload(data, outcomes), "examples.json")
        if pytest_benchmark:
            attach_pytest_benchmark(session, out_dir, quick=mode != "full", log=log)
        from benchmarks.report_cmd import render
        paths = render(uri, session.run_id, out_dir, session=session, log=log)
        session.finish("FINISHED")
        log(f"report: {paths['markdown']}  (MLflow UI: tox -e ui, run {session.run_id})")
        if failed:
            shown = "; ".join(f"{o.cell.name}: {o.reason}" for o in failed[:5])
            log(f"{len(failed)} of {len(outcomes)} cells failed: {shown}" + (" ..." if len(failed) > 5 else ""))
            return 1, session.run_id
        return 0, session.run_id
    except KeyboardInterrupt:
        bar.close()
        close_orphans(session, "KILLED", "interrupted by the user (Ctrl-C)")
        session.finish("KILLED", f"interrupted by the user (Ctrl-C) after {len(outcomes)} of {len(cells)} cells")
        raise


def close_orphans(session, status: str, reason: str) -> None:
    """Child runs a dead or interrupted worker left RUNNING: end them with ``status``."""
    import mlflow
    runs = mlflow.search_runs(experiment_ids=[session.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{session.run_id}' "
                                            "and attributes.status = 'RUNNING'")
    for run_id in runs.get("run_id", []):
        session.client.set_tag(run_id, "bpb.failure_reason", reason)
        session.client.set_terminated(run_id, status)


def describe(o: CellOutcome) -> str:
    if o.status != "FINISHED":
        return f"  {o.cell.name}: FAILED ({o.reason})"
    s = o.summary
    text = (f"  {o.cell.name}: {s['samples_per_second_median']:,.0f} samples/s "
            f"(IQR {s['samples_per_second_q1']:,.0f}-{s['samples_per_second_q3']:,.0f}), "
            f"{100 * s['roofline_fraction']:.2f}% of peak, compile {s['compile_seconds']:.2f} s")
    if "test_accuracy" in s:
        text += f", test accuracy {s['test_accuracy']:.4f}"
    return text


def attach_pytest_benchmark(session, out_dir: str, quick: bool, log=print) -> None:
    """Run the pytest-benchmark suite in a subprocess; log its JSON to the session."""
    import subprocess
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "pytest-benchmark.json")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "pytest", os.path.join(root, "benchmarks", "suite_train_step.py"),
           "-q", "-p", "no:cacheprovider", "--benchmark-enable", f"--benchmark-json={path}",
           "--benchmark-max-time=0.2", "--benchmark-min-rounds=5"]
    if quick:
        cmd += ["-k", "float32 and (b1 or b256)"]
    log("pytest-benchmark suite: " + " ".join(cmd[2:]))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    log("  " + (tail[0] if tail else f"exit {proc.returncode}"))
    if os.path.exists(path):
        session.log_artifact(path, "pytest-benchmark")
        with open(path) as f:
            n = len(json.load(f).get("benchmarks", []))
        session.log(metrics={"pytest_benchmark_cases": n})
    else:
        session.log(tags={"bpb.pytest_benchmark": f"failed: exit {proc.returncode}"})
