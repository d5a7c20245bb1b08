"""The worker processes (benchmarks/workers.py): the main process keeps beating while a worker
is silent, and a worker prepares its cell while the main process writes, then waits at its sync
point so that its timed passes never run beside a write. Faults from tests/faults.py."""
import time

import pytest

from benchmarks import workers
from benchmarks.config import PRESETS
from benchmarks.plan import BenchOptions, Cell
from tests import faults
from tests.helpers import PEAKS, Recorder


@pytest.mark.integration
def test_the_main_process_beats_while_a_worker_is_silent(monkeypatch, fashion, tmp_path):
    """The worker stays silent until the recorder has had five heartbeats: without them it
    would stay silent until the guard (tests/faults.py) lets it go, and the count would be 0."""
    release = tmp_path / "release"

    class Waiting(Recorder):
        def heartbeat(self):
            super().heartbeat()
            if self.beats == 5:
                release.touch()
    monkeypatch.setattr(workers, "HEARTBEAT_SECONDS", 0.01)
    monkeypatch.setenv(workers.FAULT_ENV, "tests.faults:silent_until_released")
    monkeypatch.setenv(faults.RELEASE_ENV, str(release))
    config = PRESETS["hw1-q4"].replace(impl="numpy-sample", dtype="float32", train_limit=256, test_limit=100)
    options = BenchOptions(repeats=1, repeat_seconds=0.01)
    rec = Waiting()
    workers.run_isolated([Cell("throughput", config)], workers.Job("fashion-mnist", None, 1, PEAKS, options), rec)
    assert [o.status for o in rec.closed] == ["FINISHED"]
    assert rec.beats >= 5 and release.exists()


@pytest.mark.integration
def test_a_worker_goes_on_while_the_main_process_writes_and_waits_before_its_timed_work(
        fashion, monkeypatch, tmp_path):
    """A slow store: each cell's open is still being written when the worker has prepared
    the cell and reached its sync point (benchmarks/workers.py), which the worker marks with
    what it sent before (tests/faults.py); the write then goes on for HOLD seconds. The worker did not wait for the
    write while it prepared, and waits at its sync point until the write is done, so its timed
    passes never run beside a write; the wait, at least HOLD, is reported."""
    HOLD = 0.5
    monkeypatch.setenv(workers.FAULT_ENV, "tests.faults:marks_each_sync")
    monkeypatch.setenv(faults.MARKS_ENV, str(tmp_path))

    class SlowStore(Recorder):
        sent_before_sync = []

        def open(self, cell, params, tags):
            mark = tmp_path / str(len(self.opened) + 1)         # this cell's sync request
            deadline = time.monotonic() + faults.GUARD_SECONDS
            while not mark.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.sent_before_sync.append(mark.read_text() if mark.exists() else None)
            time.sleep(HOLD)
            super().open(cell, params, tags)
            self.logged.append(({"opened": cell.name}, {}, 0))
    config = PRESETS["hw1-q4"].replace(impl="numpy-sample", dtype="float32", train_limit=256, test_limit=100)
    cells = [Cell("throughput", config), Cell("throughput", config.replace(seed=1))]
    rec = SlowStore()
    workers.run_isolated(cells, workers.Job("fashion-mnist", None, 1, PEAKS, BenchOptions(repeats=1, repeat_seconds=0.01)),
                         rec)
    assert [o.status for o in rec.closed] == ["FINISHED", "FINISHED"]
    # every cell's messages arrive after its open and in order: the open marker, then its metrics
    names = [next(iter(m.values())) for m, _, _ in rec.logged if "opened" in m]
    assert names == [c.name for c in cells]
    # each cell's open was still being written when the worker had prepared it (its parity and
    # first call logged) and reached its sync point
    assert all(sent and "open log" in sent for sent in rec.sent_before_sync), rec.sent_before_sync
    assert all(w >= HOLD for w in rec.waits), rec.waits
    assert rec.after >= 0.0
