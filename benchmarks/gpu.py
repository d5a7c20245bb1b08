"""The GPU side of a measurement: inventory tags, the GPU's own peak, peak device memory, energy.

Everything here degrades to words: with no GPU, no driver, no torch or no NVML (the
``nvidia-ml-py`` package), a value is ``"n/a: <reason>"`` and nothing raises. torch and pynvml
are imported only when asked for: by a GPU cell, or by a session that plans one.

- Inventory (``inventory()``): the GPU as ``machine.*`` tags, from NVML, else from torch when
  a worker has loaded it.
- The GPU's peak (``peak_gemm``): the best GEMM rate through torch in float32, TF32, bf16 and
  float64, measured once per session that plans a GPU cell (``session_peaks``); a GPU cell's
  roofline fraction divides by the figure of the mode it ran in (``roofline_peak``).
- Peak device memory: ``torch.cuda.max_memory_allocated`` over a cell's timed work.
- Energy (``measure_energy``): NVML's total-energy counter (millijoules since the driver
  loaded) read around at least two seconds of timed passes: the counter moves in steps far
  coarser than a 10 ms epoch. It is the whole board's energy, idle power included.
"""
from __future__ import annotations

import functools
import math
import os
import sys
import time

from tracking.peaks import GPU_MODES

NA = "n/a"
MODES = GPU_MODES          # the order the peaks are measured and logged in
ENERGY_SECONDS = 2.0

_NVML: tuple | None = None


def nvml():
    """``(pynvml, None)`` once NVML has started in this process, else ``(None, reason)``."""
    global _NVML
    if _NVML is None:
        try:
            import pynvml
        except ImportError:
            _NVML = (None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)")
            return _NVML
        try:
            pynvml.nvmlInit()
            _NVML = (pynvml, None)
        except pynvml.NVMLError as exc:
            _NVML = (None, f"NVML cannot start: {exc}")
    return _NVML


def nvml_handle(nv):
    """NVML's handle of the GPU torch calls cuda:0: the first of CUDA_VISIBLE_DEVICES (an index
    or a UUID), else NVML's device 0 (the same GPU on a one-GPU machine)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        return nv.nvmlDeviceGetHandleByUUID(first)
    return nv.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def inventory() -> dict[str, str]:
    """GPU tags: ``gpu`` (its name, or ``none``), ``gpu_memory``, ``gpu_compute_capability``,
    ``gpu_driver``, ``gpu_cuda_driver`` (the CUDA version the driver supports) and
    ``gpu_cuda_runtime`` (the CUDA torch was built with); each says why where it is unknown."""
    nv, why = nvml()
    out = {"gpu": "none", "gpu_memory": f"{NA}: {why}", "gpu_compute_capability": f"{NA}: {why}",
           "gpu_driver": f"{NA}: {why}", "gpu_cuda_driver": f"{NA}: {why}"}
    if nv is not None:
        try:
            out["gpu_driver"] = _text(nv.nvmlSystemGetDriverVersion())
            v = nv.nvmlSystemGetCudaDriverVersion_v2()
            out["gpu_cuda_driver"] = f"{v // 1000}.{v % 1000 // 10}"
            if nv.nvmlDeviceGetCount() == 0:
                raise nv.NVMLError(nv.NVML_ERROR_NOT_FOUND)
            h = nvml_handle(nv)
            out["gpu"] = _text(nv.nvmlDeviceGetName(h))
            out["gpu_memory"] = f"{nv.nvmlDeviceGetMemoryInfo(h).total / 2 ** 30:.1f} GiB"
            out["gpu_compute_capability"] = "{}.{}".format(*nv.nvmlDeviceGetCudaComputeCapability(h))
        except nv.NVMLError as exc:
            for k in ("gpu_memory", "gpu_compute_capability"):
                out[k] = f"{NA}: NVML: {exc}"
    torch = sys.modules.get("torch")
    if torch is None:
        out["gpu_cuda_runtime"] = f"{NA}: torch not loaded in this process"
        return out
    out["gpu_cuda_runtime"] = torch.version.cuda or f"{NA}: a CPU-only torch build"
    if out["gpu"] == "none" and torch.cuda.is_available():     # no NVML: torch knows the rest
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_memory=f"{props.total_memory / 2 ** 30:.1f} GiB",
                   gpu_compute_capability=f"{props.major}.{props.minor}")
    return out


# ---- the GPU's own peak ---------------------------------------------------------------------
def peak_gemm(device: str = "cuda", n: int = 8192, rounds: int = 5, round_seconds: float = 0.05) -> dict[str, float]:
    """Best GEMM GFLOP/s of ``n x n`` matrices through torch, per mode in MODES. On a GPU each
    round is timed with CUDA events around enough products to last ``round_seconds``."""
    import torch
    dtypes = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    out = {}
    try:
        for mode in MODES:
            matmul.fp32_precision = "tf32" if mode == "tf32" else "ieee"
            gen = torch.Generator(device=device).manual_seed(0)
            a = torch.rand((n, n), generator=gen, dtype=dtypes[mode], device=device)
            b = torch.rand((n, n), generator=gen, dtype=dtypes[mode], device=device)
            out[mode] = 2 * n ** 3 / _best_seconds(functools.partial(torch.matmul, a, b), device, rounds, round_seconds) / 1e9
            del a, b
    finally:
        matmul.fp32_precision = before
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def _best_seconds(op, device: str, rounds: int, round_seconds: float) -> float:
    """The shortest time of one ``op()`` over ``rounds`` timed rounds, after two untimed."""
    import torch
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    op(), op()
    sync()
    t0 = time.perf_counter()
    op()
    sync()
    per_round = max(1, math.ceil(round_seconds / max(time.perf_counter() - t0, 1e-6)))
    best = float("inf")
    for _ in range(rounds):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(per_round):
                op()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(per_round):
                op()
            seconds = time.perf_counter() - t0
        best = min(best, seconds / per_round)
    return best


def session_peaks(device_cells: bool, log=print) -> dict[str, float]:
    """``peak_gemm()`` for a session that plans GPU cells (``device_cells``), else {}. A probe
    that fails (out of memory, a broken driver) is logged and leaves the GPU cells' roofline
    fraction unmeasured rather than stopping the session."""
    if not device_cells:
        return {}
    import torch
    if not torch.cuda.is_available():
        return {}
    try:
        return peak_gemm()
    except RuntimeError as exc:
        log(f"GPU peak GEMM probe failed, GPU cells get no roofline fraction: {str(exc).splitlines()[0]}")
        return {}


def roofline_peak(dtype: str, tf32: bool, peaks: dict[str, float]) -> tuple[float, str]:
    """(GFLOP/s, words) of the GPU peak a cell in ``dtype`` is measured against: its own mode's
    (float32, TF32 when on, float64); NaN where the session measured none."""
    mode = "tf32" if tf32 and dtype == "float32" else dtype
    value = peaks.get(mode, float("nan"))
    return value, (f"GPU {mode} GEMM, measured this session" if not math.isnan(value)
                   else f"{NA}: no GPU {mode} peak measured this session")


# ---- per cell: device memory and energy ---------------------------------------------------
def reset_peak_memory() -> None:
    import torch
    torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes() -> int:
    import torch
    return int(torch.cuda.max_memory_allocated())


class EnergyMeter:
    """NVML's total-energy counter of the GPU; ``reason`` says why there is none."""

    def __init__(self):
        self.reason, self._read = None, None
        nv, why = nvml()
        if nv is None:
            self.reason = why
            return
        try:
            handle = nvml_handle(nv)
            nv.nvmlDeviceGetTotalEnergyConsumption(handle)
        except nv.NVMLError as exc:
            self.reason = f"NVML's total-energy counter is not offered here: {exc}"
            return
        self._read = lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle)

    def millijoules(self) -> int:
        return int(self._read())


def measure_energy(timed, meter=None, seconds: float = ENERGY_SECONDS) -> tuple[dict, dict]:
    """(metrics, tags): joules per epoch of the cell's training set, from the energy counter
    read around timed passes (``benchmarks.timing.Timed``) lasting at least ``seconds``; or
    the tag ``bpb.energy`` saying why not."""
    meter = meter or EnergyMeter()
    if meter.reason:
        return {}, {"bpb.energy": f"{NA}: {meter.reason}"}
    timed.net.sync()
    e0, t0, samples, r = meter.millijoules(), time.perf_counter(), 0, 0
    while r == 0 or time.perf_counter() - t0 < seconds:
        r += 1
        timed.rate(1000 + r)            # repeats numbered apart from the timed ones' orders
        samples += timed.n
    e1, elapsed = meter.millijoules(), time.perf_counter() - t0
    if e1 <= e0:
        return {}, {"bpb.energy": f"{NA}: the energy counter did not move in {elapsed:.1f} s"}
    joules = (e1 - e0) / 1e3
    epoch = len(timed.p.x)
    return ({"energy_joules_per_epoch": joules / samples * epoch, "average_power_watts": joules / elapsed,
             "energy_window_seconds": elapsed},
            {"bpb.energy": f"NVML total-energy counter over {elapsed:.1f} s, {samples} samples, "
                           f"epoch = {epoch} samples"})
