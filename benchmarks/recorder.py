"""The main process's recorder (the protocol is in ``benchmarks/cells.py``): what a worker
measures becomes MLflow writes here, and progress lines for the person watching."""
from __future__ import annotations

import copy
import itertools
import time

import tracking
from benchmarks.cells import CellOutcome
from benchmarks.plan import Cell


class TrackingRecorder:
    """The main process's recorder (see ``benchmarks/cells.py``): writes to the session's
    MLflow runs, remembers the cell in flight, prints its progress lines, and hands each outcome
    to ``on_outcome``.

    A cell's params, metrics and tags are gathered and written in one ``log_batch`` when it
    closes, or sooner once ``FLUSH_SECONDS`` have passed (a long cell still shows its epochs
    in the UI as it goes): four calls per cell (create, dataset, batch, end), each a round trip
    to a server (docs/performance.md). A worker does not wait for them (``benchmarks/workers.py``)
    except at its sync points; ``wait_seconds`` is what it did wait, per cell, and ``wait_after``
    the waits after each worker's last cell: the part of tracking the session's wall time pays
    for while cells run."""

    FLUSH_SECONDS = 10.0

    def __init__(self, session: tracking.Session, dataset, on_outcome, cells: list[Cell], log=print, tags=None):
        self.session, self.dataset, self.on_outcome, self.say = session, dataset, on_outcome, log
        self.total = len(cells)
        self.bases = speedup_base_cells(cells)
        self.rates: dict[str, float] = {}            # finished cell name -> its median samples/s
        self.speedup_logged: set[str] = set()
        self.tags = tags or {}                 # added to every cell's (the machine label)
        self.current: tuple[Cell, str] | None = None
        self.between = ""                   # what runs between cells (``progress`` with no cell open)
        self.run_ids: dict[str, str] = {}          # cell name -> its child run
        self.tracking_seconds: dict[str, float] = {}   # cell name -> seconds in tracking calls
        self.wait_seconds: dict[str, float] = {}       # cell name -> seconds its worker waited for them
        self.wait_after = 0.0
        self.worker_wait = 0.0          # what workers waited in all (wait_after included)
        self._spent_at_open, self._flushed, self._pending = 0.0, 0.0, None
        self.opened, self._numbers = 0, itertools.count(1)     # the cells opened, shared with ``beside``'s
        self._family = [self]                                   # this recorder and its ``beside``s
        self.cell_start = self.last_line = time.monotonic()

    def open(self, cell, params, tags):
        self._spent_at_open = tracking.spent()[0]
        self.between = ""
        self.current = (cell, self.session.open_cell(cell.title, {}, {**tags, **self.tags}, self.dataset))
        self._pending, self._flushed = {"params": dict(params), "tags": {}, "points": []}, time.monotonic()
        self.run_ids[cell.name] = self.current[1]
        self.opened = next(self._numbers)
        self.cell_start = time.monotonic()
        self._line(f"[{self.opened}/{self.total}] {cell.title} ...")

    def log(self, metrics=None, tags=None, step=0, series=None, params=None):
        now, pending = int(time.time() * 1000), self._pending
        pending["params"].update(params or {})
        pending["points"] += [(k, v, step, now) for k, v in (metrics or {}).items() if v is not None]
        pending["points"] += [(k, v, i, now) for k, vs in (series or {}).items() for i, v in enumerate(vs, start=1)]
        pending["tags"].update(tags or {})
        if time.monotonic() - self._flushed >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self):
        pending, self._pending, self._flushed = self._pending, {"params": {}, "tags": {}, "points": []}, time.monotonic()
        if self.current is not None and pending:
            self.session.log(self.current[1], **pending)

    def sync(self):
        """In this process every write is done when its call returns: nothing to wait for."""

    def waited(self, seconds: float = 0.0):
        """A worker's wait for the writes of its last cell (``benchmarks/workers.py``)."""
        self.wait_after += seconds
        self.worker_wait += seconds

    def progress(self, text: str):
        """A line for the person watching; between cells (the scaling section's rounds), the
        work it names, which a heartbeat then repeats."""
        if self.current is None:
            self.between = text
        self._line(f"    {self.current[0].title}: {text}" if self.current is not None else f"    {text}")

    def heartbeat(self):
        """Called while a worker is silent: a line that says the cell is alive, and for how long."""
        if self.current is not None:
            self._line(f"    {self.current[0].title}: still running, {time.monotonic() - self.cell_start:.0f} s "
                       "in this cell")
        elif self.between:
            self._line(f"    {self.between}: still running, {time.monotonic() - self.last_line:.0f} s since the "
                       "last line")
        else:
            self._line(f"    a worker is starting (imports, data): {time.monotonic() - self.last_line:.0f} s since "
                       "the last line")

    def _line(self, text: str):
        self.last_line = time.monotonic()
        self.say(text)

    def close(self, outcome: CellOutcome, details=None, waited: float | None = None):
        c = outcome.cell.config
        if outcome.status == "FINISHED":
            self.rates[outcome.cell.name] = outcome.summary.get("samples_per_second_median", float("nan"))
            base = self.rates.get(self.bases.get((c.sizes, c.activation, c.dtype), ""))
            # in the same write as the rest; a cell timed before its speed-up base gets it at the
            # end; the scaling section's cells have ratios of their own (benchmarks/scaling.py)
            if base and outcome.cell.kind != "scaling":
                # over impls.SPEEDUP_BASE; the metric keeps its old name, which the stores hold, so
                # that old sessions still compare
                self.log({"speedup_vs_reference": self.rates[outcome.cell.name] / base})
                self.speedup_logged.add(outcome.cell.name)
        self.flush()
        _, run_id = self.current
        self.current = None
        self.session.end_cell(run_id, outcome.status, outcome.reason, details)
        # the main process only writes between open and close (a worker, or the cell in this
        # process, does the rest outside tracking calls): the difference is this cell's cost
        self.tracking_seconds[outcome.cell.name] = tracking.spent()[0] - self._spent_at_open
        # in this process (no worker) the calls themselves are the wait
        self.wait_seconds[outcome.cell.name] = self.tracking_seconds[outcome.cell.name] if waited is None else waited
        if waited is not None:
            self.worker_wait += waited
        self.on_outcome(outcome)

    def beside(self, tags: dict, prefix: str) -> "TrackingRecorder":
        """A recorder for cells that run at the same time as this one's, in the same session, from
        another thread (a shard's other host, ``benchmarks/fleet.py``): its own cell in flight,
        tags and lines, the same session, numbering, rates and records per cell. What its worker
        waited is its own (``worker_wait``): the caller adds it up."""
        twin = copy.copy(self)
        twin.tags, twin.current, twin.between, twin._pending = {**self.tags, **tags}, None, "", None
        twin.wait_after = twin.worker_wait = 0.0
        twin.say = lambda text: self.say(f"{prefix}{text}")
        self._family.append(twin)
        return twin

    def gather(self, twin: "TrackingRecorder") -> None:
        """What ``twin``'s worker waited, added to this recorder's, once it is done."""
        self.wait_after += twin.wait_after
        self.worker_wait += twin.worker_wait

    def abort(self, status: str, reason: str):
        """Close the cell in flight, if any, with ``status`` (KILLED, or FAILED for a dead worker)."""
        if self.current is not None:
            self.close(CellOutcome(self.current[0], status, reason))

    def abort_all(self, status: str, reason: str):
        """``abort`` here and in every recorder ``beside`` this one: the session ends."""
        failures = []
        for recorder in self._family:
            try:
                recorder.abort(status, reason)
            except Exception as exc:      # the store may be what failed: still try every other cell
                failures.append(exc)
        if failures:
            raise failures[0]


def speedup_base_cells(cells: list[Cell]) -> dict:
    """(sizes, activation, dtype) -> the name of the cell that speed-ups divide by: the speed-up
    base's (``impls.SPEEDUP_BASE``) throughput cell on that network and dtype, else its accuracy
    cell (as ``reports/tables.py`` ``with_speedup`` does)."""
    import impls
    bases = {}
    for cell in sorted((c for c in cells if c.config.impl == impls.SPEEDUP_BASE), key=lambda c: c.kind != "throughput"):
        bases.setdefault((cell.config.sizes, cell.config.activation, cell.config.dtype), cell.name)
    return bases
