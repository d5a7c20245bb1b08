"""A session's measured GEMM peaks as one typed record, and the MLflow names it is stored under.

The record is written by a session (``benchmarks/peaks.py`` measures it) and read back from
the session's run (``tracking.session_meta``); both sides use the names here, so no key is
parsed back by prefix. The names are those older sessions logged, so they still read:

- ``peak_gemm_gflops_<key>``, ``peak_gemm_spread_<key>``, ``peak_gemm_source_<key>`` (params),
  ``<key>`` being the dtype, with ``_1thread`` for a peak measured on one thread;
- ``peak_gemm_rule`` (param): which figure a cell's roofline divides by;
- ``gpu_peak_gemm_gflops_<mode>`` (params), the GPU's own peak per mode;
- ``peak_probe/<when>/<key>/<figure>`` (metrics), every figure of a probe;
- ``peak_gemm_gflops`` (a metric of the first sessions, before the params): the float32 peak;
- ``peak_gemm`` (a cell's param): the key of the peak its roofline divides by, or ``GPU_KEY``;
- ``shape_peak/<shape key>/<figure>`` (metrics), each shape peak of the session
  (``benchmarks/shape_peaks.py``); ``shape_peak_gflops`` (a batch cell's param) the one its
  ``shape_fraction`` divides by.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

DTYPES = ("float32", "float64")
GPU_MODES = ("float32", "tf32", "bfloat16", "float64")
PROBE_FIGURES = ("numpy_median", "numpy_spread", "torch_median", "torch_spread", "peak", "spread")
NAN = float("nan")
GPU_KEY = "gpu"     # a GPU cell's ``peak_gemm``: its roofline divides by the GPU's own peak


def peak_key(dtype: str, one_thread: bool) -> str:
    """The name of a peak in its params, and the value of a cell's param ``peak_gemm``."""
    return f"{dtype}_1thread" if one_thread else dtype


KEYS = {peak_key(dtype, one): (dtype, one) for dtype in DTYPES for one in (False, True)}
# the session's params that hold what its probes measured (not the rule, which is a choice);
# the bare names are the cells' own
MEASURED_PARAMS = frozenset({f"peak_gemm_{figure}_{key}" for figure in ("gflops", "spread", "source") for key in KEYS}
                            | {"peak_gemm_gflops", "peak_gemm_spread", "shape_peak_gflops"})


def on_one_thread(key) -> bool:
    """Whether a cell's ``peak_gemm`` names a peak measured on one thread (False for
    ``GPU_KEY`` and for a cell that recorded none)."""
    return KEYS.get(key, ("", False))[1]


def probe_metric(when: str, dtype: str, one_thread: bool, figure: str) -> str:
    return f"peak_probe/{when}/{peak_key(dtype, one_thread)}/{figure}"


def shape_key(sizes, batch: int, dtype: str) -> str:
    """The name of one shape peak: the network's layer sizes, the batch and the dtype."""
    return f"{'-'.join(map(str, sizes))}_b{batch}_{dtype}"


def shape_metric(key: str, figure: str) -> str:
    return f"shape_peak/{key}/{figure}"


@dataclass(frozen=True)
class Peak:
    """One measured CPU GEMM peak: its dtype, whether on one thread (else the session's
    threads), GFLOP/s, the probe's relative spread (NaN: not recorded) and the library that
    set it (``numpy`` | ``torch``; empty: not recorded)."""
    dtype: str
    one_thread: bool
    gflops: float
    spread: float = NAN
    source: str = ""

    @property
    def key(self) -> str:
        return peak_key(self.dtype, self.one_thread)

    def logged(self) -> Peak:
        """This peak as its params hold it (and read back): GFLOP/s to 0.1, spread to 4 places."""
        return replace(self, gflops=round(self.gflops, 1), spread=round(self.spread, 4))

    def params(self) -> dict:
        p = self.logged()
        return {f"peak_gemm_gflops_{p.key}": p.gflops, f"peak_gemm_spread_{p.key}": p.spread,
                f"peak_gemm_source_{p.key}": p.source}


@dataclass(frozen=True)
class Peaks:
    """A session's peaks: the CPU's per dtype (on its threads, and on one thread where its
    single-threaded cells need it), the GPU's per mode, the rule, and the end probe's float32
    figures (``PROBE_FIGURES``; empty where not read back), and the shape peaks in GFLOP/s by
    ``shape_key`` (the session's, in memory; a session read back keeps them in its metrics)."""
    cpu: tuple[Peak, ...] = ()
    gpu: dict = field(default_factory=dict)
    rule: str = ""
    end: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)

    def get(self, dtype: str, one_thread: bool = False) -> Peak | None:
        return next((p for p in self.cpu if p.dtype == dtype and p.one_thread == one_thread), None)

    def for_cell(self, dtype: str, one_thread: bool) -> Peak:
        """The peak a CPU cell in ``dtype`` divides by: on one thread for a single-threaded
        implementation where that was measured, else on the session's threads."""
        return (one_thread and self.get(dtype, True)) or self.get(dtype, False) or Peak(dtype, False, NAN)

    def gflops(self, one_thread: bool = False) -> dict[str, float]:
        """dtype -> GFLOP/s of the peaks on one thread, or on the session's threads."""
        return {p.dtype: p.gflops for p in self.cpu if p.one_thread == one_thread}

    def spreads(self) -> dict[str, float]:
        """Peak key -> spread, of the peaks that recorded one."""
        return {p.key: p.spread for p in self.cpu if not math.isnan(p.spread)}

    def params(self) -> dict:
        """The session's params: every peak's, the rule, and the GPU's per mode."""
        out = {"peak_gemm_rule": self.rule}
        for p in self.cpu:
            out.update(p.params())
        return out | {f"gpu_peak_gemm_gflops_{m}": round(v, 1) for m, v in self.gpu.items()}

    @classmethod
    def from_meta(cls, meta: dict) -> Peaks:
        """The record a report's ``meta`` holds (``tracking.session_meta`` puts it under
        ``peak_record``); a meta without one (a session exported to JSON) holds at most its
        float32 peak, ``peak_gemm_gflops``."""
        record = meta.get("peak_record")
        if isinstance(record, cls):
            return record
        gflops = float(meta.get("peak_gemm_gflops", NAN))
        return cls(() if math.isnan(gflops) else (Peak("float32", False, gflops),))

    @classmethod
    def from_run(cls, row) -> Peaks:
        """The record of a session's parent run read back (``row``: MLflow's columns,
        ``params.*`` and ``metrics.*``, as strings or numbers). A session of the first kind,
        with only the metric ``peak_gemm_gflops``, reads as its float32 peak."""
        def number(name):
            value = row.get(name)
            return float(value) if _present(value) else NAN

        cpu = []
        for key, (dtype, one) in KEYS.items():
            gflops = number(f"params.peak_gemm_gflops_{key}")
            if not math.isnan(gflops):
                cpu.append(Peak(dtype, one, gflops, number(f"params.peak_gemm_spread_{key}"),
                                str(row.get(f"params.peak_gemm_source_{key}") or "")))
        if not cpu and not math.isnan(number("metrics.peak_gemm_gflops")):
            cpu.append(Peak("float32", False, number("metrics.peak_gemm_gflops")))
        gpu = {m: number(f"params.gpu_peak_gemm_gflops_{m}") for m in GPU_MODES}
        end = {f: number("metrics." + probe_metric("end", "float32", False, f)) for f in PROBE_FIGURES}
        return cls(tuple(cpu), {m: v for m, v in gpu.items() if not math.isnan(v)},
                   str(row.get("params.peak_gemm_rule") or ""), {f: v for f, v in end.items() if not math.isnan(v)})


def _present(value) -> bool:
    """Neither None, NaN (a column other runs have) nor empty."""
    return value is not None and value == value and value != ""
