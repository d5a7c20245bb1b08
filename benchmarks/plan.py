"""What a session runs: the options, the cells, and the one planner.

Three kinds of cell, each from one RunConfig:

- accuracy: a preset trained to the end (an accuracy curve per epoch, time-to-target), once
  per seed;
- throughput: steady-state training speed over ``repeats`` timed passes (``benchmarks/timing.py``);
- scaling: one case of torch-ddp's scaling section (``benchmarks/scaling.py``), its ``role``
  saying which; the section's cases are timed together, interleaved, in one worker.

The bench session and the regression gate are two matrices of the same planner: the gate is
``gate_options()``. Whether an implementation can run a configuration is asked of
``impls.runnable`` and nothing else; a cell it refuses is SKIPPED, with its reason.
"""
from __future__ import annotations

from dataclasses import dataclass

import impls
from benchmarks.config import PRESETS, RunConfig
from benchmarks.threads import all_cores

FULL_SCHEDULE = (("hw1-q4", None, None), ("hw1-q3", None, None))
# the presets the peers train by default: the report's Peers section compares them on hw1-q3
PEER_PRESETS = ("hw1-q3",)
# seconds of training an accuracy cell may take, per bench mode: on a quiet machine of this
# kind the slowest full cell (torch-cpu, hw1-q4, batch 1) trains in well under this
DEFAULT_BUDGET = {"full": 180.0, "quick": 60.0, "dry-run": 60.0}
# the scaling section (benchmarks/scaling.py): its implementation, its base, its network
SCALING_IMPL, SCALING_BASE, SCALING_PRESET = "torch-ddp", "torch-cpu", "hw1-q3"
SCALING_MAX_WORLD = 4           # as torch-ddp's default world size (impls/torch_ddp.py MAX_DEFAULT_WORLD)


@dataclass(frozen=True)
class BenchOptions:
    impls: tuple[str, ...] = ()          # empty: every registered implementation
    # accuracy cells: (preset, epochs or None for the preset's, training samples or None for all)
    schedule: tuple[tuple[str, int | None, int | None], ...] = FULL_SCHEDULE
    seeds: tuple[int, ...] = (0,)        # accuracy cells run once per seed
    sweep_preset: str = "hw1-q4"         # the network of the throughput sweep
    batch_sizes: tuple[int, ...] = (1, 32, 256, 1024)
    dtypes: tuple[str, ...] = ("float32", "float64")
    # "all": every (dtype, batch) an implementation supports; "largest": one cell per
    # implementation and dtype, at the largest batch size it supports (the gate's speed cells)
    sweep: str = "all"
    reference_every_preset: bool = True  # numpy-sample timed on each scheduled network (speed-ups)
    cpu_only: bool = False
    repeats: int = 5
    repeat_seconds: float = 0.4
    paired_reference: bool = False       # time numpy-sample between the repeats (the gate's ratios)
    dataset: str = "fashion-mnist"
    train_limit: int | None = None       # throughput cells: use only the first N training samples
    test_limit: int | None = None
    # seconds an accuracy cell may train (epochs and evaluation): one that would take longer
    # trains on fewer samples, and stops early if it still runs over (``benchmarks/budget.py``);
    # None: no budget (the regression gate's cells must be the baseline's, whatever they cost)
    cell_budget: float | None = None
    # the peers (impls.PEERS: sklearn-mlp, jax-cpu): unless named in ``impls``, they train the
    # PEER_PRESETS only and join no throughput sweep; the gate leaves them out
    peers: bool = True
    # the scaling section (benchmarks/scaling.py): torch-ddp at world sizes 1..N against torch-cpu,
    # where torch-ddp is available, this process may use two cores or more, and ``impls`` is
    # empty or names torch-ddp; the gate leaves it out
    scaling: bool = True
    scaling_samples: int = 20000         # samples per case and round (at most ``train_limit``)

    @property
    def presets(self) -> tuple[str, ...]:
        return tuple(p for p, _, _ in self.schedule)

    @classmethod
    def make(cls, mode: str = "full", presets=("hw1-q4", "hw1-q3"), epochs: int | None = None,
             train_limit: int | None = None, **kw) -> "BenchOptions":
        """The bench command's matrices: ``full``; ``quick`` (one epoch on 20k samples,
        batches 1 and 256, 3 repeats); ``dry-run`` (every stage once, tiny, in seconds). Each
        with its default cell budget (``DEFAULT_BUDGET``)."""
        base = {"full": {},
                "quick": dict(batch_sizes=(1, 256), repeats=3, repeat_seconds=0.25, epochs=1, train_limit=20000),
                "dry-run": dict(batch_sizes=(1, 32), dtypes=("float32",), repeats=3, repeat_seconds=0.02,
                                epochs=1, train_limit=512, test_limit=256)}[mode]
        base["cell_budget"] = DEFAULT_BUDGET[mode]
        epochs = epochs or base.pop("epochs", None)
        train_limit = train_limit or base.pop("train_limit", None)
        base.pop("epochs", None), base.pop("train_limit", None)
        schedule = tuple((p, epochs, train_limit) for p in presets)
        return cls(**{**base, "schedule": schedule, "train_limit": train_limit, **kw})


def gate_options(impl_names: tuple[str, ...] = (), dataset: str = "fashion-mnist", seeds=(0, 1, 2),
                 repeats: int = 7, repeat_seconds: float = 0.2) -> BenchOptions:
    """The regression gate's matrix: every CPU implementation on shortened presets (long enough
    to separate a 2-point regression), three seeds, and one paired speed cell per
    implementation on hw1-q4's network in float32."""
    return BenchOptions(impls=impl_names, schedule=(("hw1-q4", 1, 20000), ("hw1-q3", 2, 20000)), seeds=seeds,
                        batch_sizes=(1, 256), dtypes=("float32",), sweep="largest", reference_every_preset=False,
                        cpu_only=True, repeats=repeats, repeat_seconds=repeat_seconds, paired_reference=True,
                        dataset=dataset, peers=False, scaling=False)


@dataclass(frozen=True)
class Cell:
    kind: str            # accuracy | throughput | scaling
    config: RunConfig
    role: str = ""       # a scaling cell's case (benchmarks/scaling.py ROLES)

    @property
    def name(self) -> str:
        c = self.config
        if self.kind == "scaling":
            return f"scaling/{self.role}/{c.impl}/{c.preset}/{c.dtype}/b{c.batch_size}/ws{c.world_size or 1}"
        return f"{self.kind}/{c.impl}/{c.preset}/{c.dtype}/b{c.batch_size}/s{c.seed}"

    @property
    def title(self) -> str:
        """The run name in the MLflow UI: what tells cells apart first (the UI cuts long names)."""
        if self.kind == "scaling":
            c = self.config
            ranks = f" {c.world_size} rank{'s' if c.world_size > 1 else ''}" if c.world_size else ""
            role = "" if self.role == "1-rank" else f" {self.role}"
            return f"{c.impl}{ranks}{role} b{c.batch_size} · {self.configuration}"
        return f"{self.config.impl} {self.configuration}"

    @property
    def configuration(self) -> str:
        """The title without the implementation: what the cells that compete share (one group
        of the UI's saved view, ``tracking.Session.publish_view``)."""
        c = self.config
        if self.kind == "scaling":        # one group: the section's cases side by side
            return f"{c.dtype.replace('float', 'f')} · scaling {c.preset}"
        what = f"throughput {c.preset}" if self.kind == "throughput" else f"{c.preset} seed {c.seed}"
        return f"{c.dtype.replace('float', 'f')} b{c.batch_size} · {what}"


def _needs_gpu(name: str) -> bool:
    """False also for an implementation whose backend is not installed (a peer): it is skipped
    later with the reason ``impls.available_reason`` gives."""
    try:
        return impls.get(name).needs_gpu
    except ImportError:
        return False


def plan(options: BenchOptions) -> tuple[list[Cell], list[str]]:
    """The cells to run, and one line per implementation or cell SKIPPED, with its reason."""
    names = list(options.impls) or [n for n in impls.names() if (options.peers or not impls.is_peer(n))
                                    and n not in impls.OPT_IN]
    # peers named explicitly (not through "all") run everywhere
    named = set(options.impls) if set(options.impls) != set(impls.names()) else set()
    skipped = []
    if options.cpu_only:
        gpu = {n for n in names if _needs_gpu(n)}
        skipped = [f"{n}: a GPU implementation; this matrix runs CPU ones only" for n in names if n in gpu]
        names = [n for n in names if n not in gpu]
    skipped += [f"{n}: {impls.available_reason(n)}" for n in names if impls.available_reason(n)]
    names = [n for n in names if not impls.available_reason(n)]
    cells: list[Cell] = []

    def base(preset: str, epochs=None, limit=None) -> RunConfig:
        c = PRESETS[preset].replace(dataset=options.dataset, seed=options.seeds[0], train_limit=limit,
                                    test_limit=options.test_limit)
        return c.replace(epochs=epochs) if epochs else c

    for preset, epochs, limit in options.schedule:
        for name in names:
            if impls.is_peer(name) and name not in named and preset not in PEER_PRESETS:
                continue
            config = base(preset, epochs, limit).replace(impl=name)
            reason = impls.runnable(name, dtype=config.dtype, batch_size=config.batch_size)
            if reason:
                skipped.append(f"accuracy/{name}/{preset}: {reason}")
                continue
            cells.extend(Cell("accuracy", config.replace(seed=seed)) for seed in options.seeds)

    others = [p for p in options.presets if p != options.sweep_preset] if options.reference_every_preset else []
    for preset in [options.sweep_preset] + others:
        # the full sweep on one network; elsewhere the numpy-sample baseline only (speed-ups)
        sweep_names = names if preset == options.sweep_preset else [n for n in names if n == impls.SPEEDUP_BASE]
        sweep_names = [n for n in sweep_names if not impls.is_peer(n) or n in named]
        for name in sweep_names:
            for dtype in options.dtypes:
                batches = [b for b in options.batch_sizes if not impls.runnable(name, dtype=dtype, batch_size=b)]
                if options.sweep == "largest":
                    batches = batches[-1:] if batches else []
                # an unsupported (dtype, batch), e.g. a -sample implementation above batch 1, is
                # not a cell of the sweep at all
                cells.extend(Cell("throughput", base(preset, limit=options.train_limit).replace(
                    impl=name, dtype=dtype, batch_size=b)) for b in sorted(batches))
    if options.scaling and (not options.impls or SCALING_IMPL in options.impls):
        more, why = scaling_cells(options)
        cells += more
        skipped += why
    return cells, skipped


def scaling_cells(options: BenchOptions, cores: int | None = None) -> tuple[list[Cell], list[str]]:
    """The scaling section's cases (benchmarks/scaling.py), at world sizes 1..N, N = the cores
    this process may use, at most ``SCALING_MAX_WORLD``; each rank gets cores // N threads.
    On hw1-q3's network and batch B, in float32 (or the matrix's first dtype): torch-cpu on one
    rank's threads (``base``), torch-ddp on 1 rank (``1-rank``), on k ranks at global batch B
    (``strong``) and k*B (``weak``), and torch-cpu on the k ranks' threads (``threads``)."""
    cores = cores or all_cores()
    world = min(cores, SCALING_MAX_WORLD)
    for name in (SCALING_IMPL, SCALING_BASE):
        why = impls.available_reason(name)
        if why:
            return [], [f"scaling/{name}: {why}"]
    if world < 2:
        return [], [f"scaling: this process may use {cores} core: nothing to spread ranks over"]
    dtype = "float32" if "float32" in options.dtypes else options.dtypes[0]
    c = PRESETS[SCALING_PRESET].replace(dataset=options.dataset, dtype=dtype, seed=options.seeds[0],
                                        train_limit=options.train_limit, test_limit=options.test_limit)
    b = c.batch_size
    cells = [Cell("scaling", c.replace(impl=SCALING_BASE), "base"),
             Cell("scaling", c.replace(impl=SCALING_IMPL, world_size=1), "1-rank")]
    for k in range(2, world + 1):
        cells += [Cell("scaling", c.replace(impl=SCALING_IMPL, world_size=k), "strong"),
                  Cell("scaling", c.replace(impl=SCALING_IMPL, world_size=k, batch_size=k * b), "weak"),
                  Cell("scaling", c.replace(impl=SCALING_BASE, world_size=None), f"threads-{k}")]
    return cells, []
