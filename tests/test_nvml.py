"""The GPU inventory and energy meter through NVML (benchmarks/gpu.py), with nvidia-ml-py
absent, unable to start, or faked: every failure is a reason in the record, never an error."""
import sys
import types

import numpy as np
import pytest

from benchmarks import gpu


def test_inventory_with_nvml_absent(monkeypatch):
    monkeypatch.setattr(gpu, "_NVML", None)
    monkeypatch.setitem(sys.modules, "pynvml", None)          # import pynvml raises ImportError
    inv = gpu.inventory()
    assert inv["gpu"] == "none"
    for key in ("gpu_memory", "gpu_compute_capability", "gpu_driver", "gpu_cuda_driver"):
        assert inv[key] == "n/a: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    meter = gpu.EnergyMeter()
    assert meter.reason.startswith("nvidia-ml-py is not installed")
    assert gpu.measure_energy(None, meter) == ({}, {"bpb.energy": f"n/a: {meter.reason}"})


def fake_nvml(energy=None, energy_error=False):
    class NVMLError(Exception):
        pass
    state = {"mj": 1_000_000}

    def total_energy(handle):
        if energy_error:
            raise NVMLError("Not Supported")
        state["mj"] += energy
        return state["mj"]
    return types.SimpleNamespace(
        NVMLError=NVMLError, NVML_ERROR_NOT_FOUND=6, nvmlInit=lambda: None,
        nvmlSystemGetDriverVersion=lambda: "580.159.04", nvmlSystemGetCudaDriverVersion_v2=lambda: 13000,
        nvmlDeviceGetCount=lambda: 1, nvmlDeviceGetHandleByIndex=lambda i: ("handle", i),
        nvmlDeviceGetHandleByUUID=lambda u: ("handle", u), nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=85520809984),
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0), nvmlDeviceGetTotalEnergyConsumption=total_energy)


def test_inventory_and_energy_through_nvml(monkeypatch):
    monkeypatch.setattr(gpu, "_NVML", (fake_nvml(energy=250), None))
    inv = gpu.inventory()
    assert (inv["gpu"], inv["gpu_memory"], inv["gpu_compute_capability"], inv["gpu_driver"], inv["gpu_cuda_driver"]) == \
        ("NVIDIA H100 80GB HBM3", "79.6 GiB", "9.0", "580.159.04", "13.0")

    class Timed:       # benchmarks.timing.Timed's surface: each pass trains n samples of a 6,000 set
        n, p = 1500, types.SimpleNamespace(x=np.zeros(6000))
        net = types.SimpleNamespace(sync=lambda: None)
        passes = 0

        def rate(self, repeat):
            Timed.passes += 1
            return 1.0
    metrics, tags = gpu.measure_energy(Timed(), gpu.EnergyMeter(), seconds=0.01)
    # each counter read adds 250 mJ: the window spans one read, so 0.25 J over passes x 1,500 samples
    assert metrics["energy_joules_per_epoch"] == pytest.approx(0.25 / (Timed.passes * 1500) * 6000)
    assert tags["bpb.energy"].startswith("NVML total-energy counter over")
    monkeypatch.setattr(gpu, "_NVML", (fake_nvml(energy=0), None))
    assert gpu.measure_energy(Timed(), gpu.EnergyMeter(), seconds=0.01)[1]["bpb.energy"].startswith(
        "n/a: the energy counter did not move")
    monkeypatch.setattr(gpu, "_NVML", (fake_nvml(energy_error=True), None))
    assert gpu.EnergyMeter().reason == "NVML's total-energy counter is not offered here: Not Supported"


def test_nvml_that_cannot_start_is_a_reason_not_an_error(monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    monkeypatch.setattr(gpu, "_NVML", None)
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: (_ for _ in ()).throw(pynvml.NVMLError_LibraryNotFound()))
    assert gpu.inventory()["gpu_driver"].startswith("n/a: NVML cannot start: NVML Shared Library Not Found")
