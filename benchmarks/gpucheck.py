"""``python -m benchmarks gpu-check``: the device check (docs/gpu.md), in one command.

1. Where there is no CUDA GPU it stops at once: the reason on stderr, exit status 4.
2. The GPU tests (``pytest -m gpu``): torch-cuda and torch-cuda-graph against the float64
   reference, graph replay against eager, no host sync in the batch loop, the fused optimizer
   and the TF32 switch (tests/test_gpu.py, and the conformance suite's GPU rows).
3. A quick bench session of torch-cpu, torch-cuda and torch-cuda-graph, with its report: the
   quick accuracy cells, and the throughput sweep on hw1-q3's network over whole
   60,000-sample passes (batch 1 and 256, float32).
4. The table (``reports/gpu.py``): parity, hw1-q3 epoch time eager and graph, % of the GPU's
   measured peak, peak device memory, joules per epoch; printed, and written beside the report
   as ``gpu-check.md``.

Exit status 0 when the tests passed and every cell finished, 1 otherwise, 4 without a GPU.
"""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import impls
import tracking
from benchmarks import datasets
from benchmarks.plan import BenchOptions
from tracking.peaks import Peaks

EXIT_NO_GPU = 4
IMPLS = ("torch-cpu", "torch-cuda", "torch-cuda-graph")
TARGET_MS = 10.0          # the target: an hw1-q3 epoch with the captured step on an H100 or H200
ROOT = Path(__file__).resolve().parents[1]
GPU_TESTS = ("tests/test_gpu.py", "tests/test_conformance.py")


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the check, or None."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not installed ({exc}); install requirements.txt, or run scripts/gpu-check"
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return (f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, {build}). "
                "Run it on a machine with an NVIDIA GPU and its driver (nvidia-smi lists the GPU).")
    return None


def check_options() -> BenchOptions:
    """The quick matrix, with the throughput sweep moved to hw1-q3's network (float32, batch 1
    and 256) over whole passes of the training set, so an epoch time is an epoch's."""
    options = BenchOptions.make("quick", ("hw1-q4", "hw1-q3"), impls=IMPLS, sweep_preset="hw1-q3",
                                dtypes=("float32",), repeats=5)
    return dataclasses.replace(options, train_limit=None)


def run_gpu_tests(folder: Path, log=print) -> tuple[int, str]:
    """``pytest -m gpu`` in a subprocess, its output shown as it runs; (exit status, counts)."""
    folder.mkdir(parents=True, exist_ok=True)
    junit = folder / "gpu-tests.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *GPU_TESTS]
    log("GPU tests: " + " ".join(cmd[2:]))
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    return rc, test_counts(junit, rc)


def test_counts(junit: Path, rc: int) -> str:
    """'N passed, N failed, N skipped' from pytest's JUnit XML; the exit status without one."""
    try:
        suite = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return f"no results (pytest exit {rc})"
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, failed, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    return f"{n - failed - errors - skipped} passed, {failed + errors} failed, {skipped} skipped (pytest exit {rc})"


def header(meta: dict, parent, tests: str) -> list[str]:
    m = meta["machine"]
    peak_text = ", ".join(f"{mode} {v / 1e3:.1f}" for mode, v in Peaks.from_run(parent).gpu.items())
    keys = ("gpu_memory", "gpu_compute_capability", "gpu_driver", "gpu_cuda_driver", "gpu_cuda_runtime")
    gpu_line = (f"GPU: {m.get('gpu', '?')}, {m.get('gpu_memory', '?')}, compute capability "
                f"{m.get('gpu_compute_capability', '?')}, driver {m.get('gpu_driver', '?')}, CUDA driver "
                f"{m.get('gpu_cuda_driver', '?')}, torch's CUDA {m.get('gpu_cuda_runtime', '?')}")
    if m.get("gpu", "none") == "none":
        gpu_line = (f"GPU: none ({'; '.join(dict.fromkeys(m[k] for k in keys[:-1] if k in m))}), "
                    f"torch's CUDA {m.get('gpu_cuda_runtime', '?')}")
    return [gpu_line,
            f"GPU peak GEMM this session, TFLOP/s: {peak_text or 'not measured'}",
            f"GPU tests (pytest -m gpu): {tests}"]


def verdict(cells) -> str:
    from reports.gpu import epoch_ms
    graph, eager = epoch_ms(cells, "torch-cuda-graph"), epoch_ms(cells, "torch-cuda")
    if math.isnan(graph):
        return "hw1-q3 epoch with the captured step: not measured"
    met = "met" if graph <= TARGET_MS else "NOT met"
    text = f"hw1-q3 epoch (60,000 samples, batch 256, Adam, float32) with the captured step: {graph:.2f} ms " \
           f"(target <= {TARGET_MS:g} ms: {met})"
    return text + (f"; eager {eager:.2f} ms ({eager / graph:.1f}x)" if not math.isnan(eager) else "")


def run_gpu_check(store: tracking.Store, *, out_dir: str, data_dir=None, threads: int | None = None,
                  tests: bool = True, log=print) -> int:
    """Steps 2-4 on a machine with a GPU (``cmd_gpu_check`` stops at step 1 without one)."""
    from benchmarks.session import SessionSettings, run_session
    from reports.gpu import gpu_columns, gpu_table
    from reports.tables import to_markdown, to_text
    started = time.perf_counter()
    data = datasets.load("fashion-mnist", data_dir)
    out = Path(out_dir)
    tests_rc, tests = run_gpu_tests(out / "gpu-tests", log) if tests else (0, "not run (--no-tests)")
    settings = SessionSettings(mode="gpu-check", out_dir=str(out), threads=threads, data_dir=data_dir)
    status, run_id = run_session(check_options(), data, store, settings, log=log)
    parent, raw_cells, raw_epochs = tracking.read_session(store, run_id)
    cells, _ = tracking.tidy(raw_cells, raw_epochs)
    cells = cells.merge(gpu_columns(raw_cells), on="run_id", how="left")
    skipped = dict(line.split(": ", 1) for line in str(parent.get("tags.bpb.skipped", "")).split("; ")
                   if line.split(": ", 1)[0] in IMPLS)
    table = gpu_table(cells, IMPLS, impls.PARITY_TOLERANCE, skipped)
    lines = header(tracking.session_meta(parent), parent, tests)
    summary = verdict(cells)
    elapsed = time.perf_counter() - started
    log("\n" + "\n".join(lines) + "\n\n" + to_text(table) + "\n\n" + summary +
        f"\nsession {run_id}; gpu-check took {elapsed / 60:.1f} min")
    path = out / run_id / "gpu-check.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# gpu-check\n\n" + "\n".join(f"- {x}" for x in lines) + "\n\n" + to_markdown(table) +
                    f"\n\n{summary}\n\nSession `{run_id}`, {elapsed / 60:.1f} min in all.\n")
    tracking.annotate(store, run_id, files=[path], artifact_path="report",
                      tags={"bpb.gpu_check": f"tests: {tests}; {summary}"})
    log(f"written: {path}")
    return 0 if tests_rc == 0 and status == 0 else 1
