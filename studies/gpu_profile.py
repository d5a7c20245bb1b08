"""Where an hw1-q3 epoch's time goes on a CUDA GPU: ``python -m studies.gpu_profile``.

hw1-q3's network (784-256-128-64-10 ReLU, Adam, float32, batch 256) over one 60,000-sample
epoch, in variants (``--variants``): torch-cuda (eager); torch-cuda-graph replayed per batch (the
default) and in graphs of 256 steps; TF32 on; the gather, forward pass and loss compiled by
torch.compile (inductor), and torch.optim's foreach Adam compiled too, inside the same graphs.
For each: the epoch's wall time (median of timed epochs, the GPU idle before the clock starts
and after it stops), the weights' difference from the first variant's after the same epochs
(float32 drift on Fashion-MNIST; on random data training is chaotic and it says little), and
from torch's profiler the GPU kernels of one training step, by kind (GEMM, elementwise,
reductions, gather, optimizer, copies): how many there are and how many microseconds of GPU
time they take. The captured epoch's wall time against the kernels' sum says how much is
launch overhead and how much is the GPU's own work. Output: a text table on stdout, and
``gpu-profile.json`` and the profiler's tables (``gpu-profile.txt``) in --out. docs/gpu.md
quotes the figures measured on an H200.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import impls
from benchmarks.config import PRESETS

KINDS = (("gemm", ("gemm", "gemv", "cutlass", "xmma", "nvjet", "sm90_", "sm80_", "splitk")),
         ("optimizer", ("adam", "multi_tensor", "foreach")),
         ("gather", ("index", "gather")),
         ("reduction", ("reduce", "softmax", "nll", "sum")),
         ("copy/fill", ("memcpy", "memset", "copy", "fill")),
         ("elementwise", ("elementwise", "vectorized", "unrolled", "triton", "relu", "threshold")))


def kind(name: str) -> str:
    low = name.lower()
    return next((k for k, words in KINDS if any(w in low for w in words)), "other")


def make(name: str, spec, params, steps_per_graph: int | None = None, compiled: str = "", tf32: bool = False):
    cls = impls.get(name)
    if compiled:
        cls = _compiled(cls, adam="adam" in compiled)
    net = cls.__new__(cls)
    if steps_per_graph is not None:
        net.steps_per_graph = steps_per_graph        # an instance's own choice, before __init__ checks it
    c = PRESETS["hw1-q3"]
    net.__init__(spec, params, lr=c.lr, batch_size=c.batch_size, dtype="float32", optimizer=c.optimizer, tf32=tf32)
    return net


def _compiled(base, adam: bool):
    """``base`` (torch-cuda-graph) with the gather, forward pass and loss compiled by inductor,
    and with ``adam`` torch.optim's Adam in its foreach form compiled too (inductor fuses its
    per-tensor loops into its own kernels); else backward and the fused optimizer as before.
    The warm-up steps compile both, outside capture."""
    import torch
    import torch.nn.functional as F

    class Compiled(base):
        def _make_optimizer(self):
            if not adam:
                return super()._make_optimizer()
            self._kernel = "foreach, compiled by inductor"
            opt = torch.optim.Adam(self._params, foreach=True, **self._optimizer_options())
            self._cstep = torch.compile(opt.step, fullgraph=False)
            return opt

        def _forward(self, idx, n):
            xt, yt = self._data
            real = self._rows < n
            ce = F.cross_entropy(self._logits(xt.index_select(0, idx)), yt.index_select(0, idx), reduction="none")
            return (ce * (real.to(self._tdtype) / n.to(self._tdtype))).sum(), (ce.detach() * real).sum()

        def _step(self, batch):
            if not hasattr(self, "_cforward"):
                self._cforward = torch.compile(self._forward, dynamic=False)
            B = self.batch_size
            loss, part = self._cforward(batch[:B], batch[B])
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._cstep() if adam else self._opt.step()
            self._total += part
    return Compiled


def epoch_ms(net, x, y, orders) -> list[float]:
    out = []
    for order in orders:
        net.sync()
        t0 = time.perf_counter()
        net.train_epoch(x, y, order)
        net.sync()
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def kernels(run, steps: int) -> dict:
    """The GPU kernels that ``run()`` launches (directly or inside a graph), per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    per, names = {}, {}
    for e in prof.key_averages():            # one row per kernel name; device rows are the kernels
        if "CUDA" in str(getattr(e, "device_type", "")) and e.device_time_total > 0:
            k = kind(e.key)
            n, us = per.get(k, (0, 0.0))
            per[k] = (n + e.count, us + e.device_time_total)
            names[e.key[:90]] = (e.count / steps, e.device_time_total / steps)
    table = {k: {"kernels_per_step": n / steps, "gpu_us_per_step": us / steps} for k, (n, us) in sorted(per.items())}
    return {"by_kind": table, "top": sorted(names.items(), key=lambda kv: -kv[1][1])[:15],
            "text": prof.key_averages().table(sort_by="device_time_total", row_limit=40)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studies.gpu_profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=7, help="timed epochs per variant (default 7)")
    ap.add_argument("--variants", default="eager,graph1,graph256,fwd",
                    help="comma-separated, of: eager, graph1, graph256, tf32, fwd, adam, adam-tf32")
    ap.add_argument("--out", default="reports/out/gpu-profile", help="folder for gpu-profile.json")
    a = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gpu_profile: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 4
    t_start = time.perf_counter()
    c = PRESETS["hw1-q3"]
    spec = impls.NetSpec(c.sizes, c.activation)
    params = impls.init_params(spec, 0, c.init)
    try:
        from benchmarks import datasets
        data = datasets.load("fashion-mnist")
        x, y = data.features("train", "float32"), data.labels("train")
    except Exception as exc:                          # timing does not depend on the values
        print(f"gpu_profile: Fashion-MNIST not loaded ({exc}); random data of the same shape")
        rng = np.random.default_rng(0)
        x, y = rng.random((60000, 784), dtype=np.float32), rng.integers(0, 10, 60000)
    rng = np.random.default_rng(1)
    orders = [rng.permutation(len(x)) for _ in range(a.epochs)]
    batches = math.ceil(len(x) / c.batch_size)
    variants = {"eager": ("eager (torch-cuda)", "torch-cuda", None, "", False),
                "graph1": ("graph, 1 step per replay", "torch-cuda-graph", 1, "", False),
                "graph256": ("graph, 256 steps per replay", "torch-cuda-graph", 256, "", False),
                "tf32": ("graph, 1 step per replay, TF32", "torch-cuda-graph", 1, "", True),
                "fwd": ("graph 256 + inductor forward", "torch-cuda-graph", 256, "forward", False),
                "adam": ("graph 1 + inductor forward and Adam", "torch-cuda-graph", 1, "forward+adam", False),
                "adam-tf32": ("graph 1 + inductor forward and Adam, TF32", "torch-cuda-graph", 1, "forward+adam", True)}
    wanted = [v.strip() for v in a.variants.split(",")]
    unknown = [v for v in wanted if v not in variants]
    if unknown:
        print(f"gpu_profile: unknown variant(s) {', '.join(unknown)}; known: {', '.join(variants)}", file=sys.stderr)
        return 2
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "batches": batches, "variants": {}}
    print(f"gpu_profile: {results['gpu']}, torch {torch.__version__}, hw1-q3 float32 batch {c.batch_size}, "
          f"{len(x):,} samples = {batches} batches")
    first = None
    for label, name, spg, compiled, tf32 in (variants[v] for v in wanted):
        t0 = time.perf_counter()
        try:
            net = make(name, spec, params, spg, compiled, tf32)
            net.warm_up(x, y)
            net.train_epoch(x, y, orders[0])          # untimed: every lazy allocation done
            ms = epoch_ms(net, x, y, orders)
            if first is None:
                first = net.get_params()              # the weights every later variant is held to
            r = {"epoch_ms_median": statistics.median(ms), "epoch_ms_min": min(ms),
                 "capture_seconds": getattr(net, "capture_seconds", None),
                 "vs_first_variant": impls.parity_error(net.get_params(), first)}
            xt, yt = net._to_device(x, y)
            table = net._order_to_device(orders[0])
            if name == "torch-cuda":
                few = table[:20 * c.batch_size]
                r["profile"] = kernels(lambda: net._epoch_loop(xt, yt, few), 20)
            else:
                r["profile"] = kernels(lambda: net._epoch_loop(xt, yt, table), batches)
                if spg == 1:                          # replays alone: no copies, no Python loop body
                    graph = net._graph
                    torch.cuda.synchronize()
                    t1 = time.perf_counter()
                    for _ in range(batches):
                        graph.replay()
                    torch.cuda.synchronize()
                    r["replays_only_ms"] = 1e3 * (time.perf_counter() - t1)
            gpu_us = sum(v["gpu_us_per_step"] for v in r["profile"]["by_kind"].values())
            r["gpu_us_per_step"], r["kernels_per_step"] = gpu_us, sum(v["kernels_per_step"] for v in r["profile"]["by_kind"].values())
            r["gpu_ms_per_epoch_from_kernels"] = gpu_us * batches / 1e3
        except Exception as exc:
            r = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        r["seconds"] = time.perf_counter() - t0
        results["variants"][label] = r
        print_variant(label, r)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-profile.txt").write_text("\n\n".join(f"== {label}\n{r.get('profile', {}).get('text', r.get('error'))}"
                                                    for label, r in results["variants"].items()))
    for r in results["variants"].values():
        r.get("profile", {}).pop("text", None)
    (out / "gpu-profile.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"gpu_profile: {time.perf_counter() - t_start:.0f} s; written {out / 'gpu-profile.json'}")
    return 0


def print_variant(label: str, r: dict) -> None:
    print(f"\n== {label} ({r['seconds']:.1f} s)")
    if "error" in r:
        print(f"   FAILED: {r['error']}")
        return
    print(f"   epoch {r['epoch_ms_median']:.2f} ms median, {r['epoch_ms_min']:.2f} min; capture "
          f"{r['capture_seconds'] if r['capture_seconds'] is None else round(r['capture_seconds'], 3)} s")
    print("   weights after the same epochs as the first variant's: "
          f"max relative difference {r['vs_first_variant']:.1e}")
    print(f"   per step: {r['kernels_per_step']:.1f} kernels, {r['gpu_us_per_step']:.1f} us of GPU time "
          f"-> {r['gpu_ms_per_epoch_from_kernels']:.2f} ms of kernels per epoch")
    if "replays_only_ms" in r:
        print(f"   replays alone (no copies): {r['replays_only_ms']:.2f} ms per epoch")
    for k, v in r["profile"]["by_kind"].items():
        print(f"   {k:12s} {v['kernels_per_step']:6.1f} kernels {v['gpu_us_per_step']:8.1f} us")
    for name, (count, us) in r["profile"]["top"][:8]:
        print(f"     {us:7.1f} us  x{count:4.1f}  {name}")


if __name__ == "__main__":
    sys.exit(main())
