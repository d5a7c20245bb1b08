"""The per-cell time budget projects from steady state: a first call, a JIT's compile of a new
length or a capture never counts (benchmarks/budget.py). On a fake clock: no test here reads
the wall clock but two (integration): a real accuracy cell over its budget trains on fewer samples,
and a real throughput cell over its budget times fewer repeats."""
import re

import numpy as np
import pytest

from benchmarks import budget
from benchmarks.config import PRESETS
from benchmarks.plan import BenchOptions, Cell
from benchmarks.runner import Prepared
from tests.helpers import PEAKS, Recorder


class FakeTime:
    """Stands in for the ``time`` module inside benchmarks/budget.py."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def fake_impl(clock: FakeTime, rate: float, first_call: str):
    """An implementation that trains ``rate`` samples/s on ``clock``, plus 2 s on its
    ``first_call``: ``instance`` (a new instance's one-off work) or ``length`` (the first call of
    every new number of samples in the process: a JIT compiling each new shape)."""
    seen_lengths = set()

    class Fake:
        def __init__(self, spec, params, **config):
            self.calls = 0

        def warm_up(self, x, y):
            pass

        def sync(self):
            pass

        def train_epoch(self, x, y, order):
            self.calls += 1
            first = self.calls == 1 if first_call == "instance" else len(order) not in seen_lengths
            seen_lengths.add(len(order))
            clock.now += len(order) / rate + (2.0 if first else 0.0)
            return 0.5
    return Fake


def prepared(cls) -> Prepared:
    config = PRESETS["hw1-q3"]             # 5 epochs at batch 256
    x, y = np.zeros((60000, 1), np.float32), np.zeros(60000, np.int64)
    return Prepared(config, cls, None, None, x, y, 0.0, 0.0)


@pytest.mark.parametrize("first_call", ["instance", "length"])
def test_a_slow_first_call_is_not_projected_and_does_not_cut_the_cell(monkeypatch, first_call):
    clock = FakeTime()
    monkeypatch.setattr(budget, "time", clock)
    # 60,000 samples/s in steady state: 5 epochs of 60,000 project to 6.25 s with the margin
    p = prepared(fake_impl(clock, 60_000.0, first_call))
    assert budget.measured_rate(p) == pytest.approx(60_000.0)
    fitted, info = budget.fit(p, 180.0)
    assert fitted is p and "note" not in info, info.get("note")
    assert info["train_samples"] == 60000 and info["projected_seconds"] == pytest.approx(6.25)


def test_a_slow_implementation_is_still_cut_and_says_so(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(budget, "time", clock)
    p = prepared(fake_impl(clock, 500.0, "instance"))       # 3,000 s projected
    fitted, info = budget.fit(p, 180.0)
    assert len(fitted.x) == info["train_samples"] < 60000 and info["train_samples"] % 256 == 0
    assert info["note"].startswith(f"trained on {info['train_samples']:,} of 60,000 samples per epoch")
    assert "500 samples/s (steady state)" in info["note"]


@pytest.mark.integration                 # trains for seconds
def test_a_cell_over_its_budget_trains_on_fewer_samples_and_says_so(fashion):
    from benchmarks import cells
    config = PRESETS["hw1-q4"].replace(impl="numpy-sample", epochs=3, train_limit=20000, test_limit=500)
    rec = Recorder()
    cells.run_group([Cell("accuracy", config)], fashion, rec, PEAKS, BenchOptions(cell_budget=0.5))
    assert [o.status for o in rec.closed] == ["FINISHED"]
    budget_tags = [t["bpb.budget"] for _, t, _ in rec.logged if "bpb.budget" in t]
    # the first says what was cut; on a loaded machine the clock may also stop it early (a second tag)
    assert budget_tags[0].startswith("trained on ") and "over the 0.5 s cell budget" in budget_tags[0], budget_tags
    metrics = {k: v for m, _, _ in rec.logged for k, v in m.items()}
    assert metrics["train_samples"] < 20000 and metrics["projected_train_seconds"] > 0.5
    assert rec.params["cell_budget_seconds"] == 0.5
    assert any(line.startswith("epoch 3/3: test accuracy") for line in rec.lines) or len(budget_tags) == 2



def test_the_clock_stops_after_the_epoch_that_would_pass_the_budget():
    class Result:
        config = PRESETS["hw1-q4"].replace(epochs=3)
        epochs = [object()]
    clock = budget.Clock(1.0)
    assert clock(Result())                                     # an instant epoch: two more fit
    clock.start -= 0.8                                         # the first epoch took 0.8 s
    assert not clock(Result()) and clock.stopped.startswith("stopped after epoch 1 of 3")
    assert budget.Clock(None)(Result())                        # no budget: never stops


def test_a_throughput_cell_times_only_the_repeats_that_fit_its_budget():
    # each repeat counts its seconds (twice when paired with the speed-up base) and a 25% margin
    assert budget.fit_repeats(5, 0.4, True, 180.0) == (5, None)
    assert budget.fit_repeats(100000, 0.4, False, None) == (100000, None)        # the gate: no budget
    fits, note = budget.fit_repeats(100000, 0.4, False, 60.0)
    assert fits == 120 and note.startswith("timed 120 of 100000 repeats: 100000 projected 50000 s")
    assert budget.fit_repeats(50, 1.0, True, 1.0)[0] == budget.MIN_REPEATS     # never fewer than 3


def test_repeats_that_run_over_the_budget_stop_after_the_repeat_that_crossed_it(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(budget, "time", clock)
    go_on = budget.repeats_deadline(10.0)
    clock.now = 30.0                              # slower than planned: 10 s per repeat
    assert go_on(1) and go_on(2)                  # three repeats, whatever they cost
    assert not go_on(3)
    assert budget.repeats_deadline(None)(500)


@pytest.mark.integration                 # times real repeats against a 0.25 s budget
def test_the_cut_is_recorded_on_the_cell_and_its_rates_are_the_repeats_timed(fashion, monkeypatch):
    from benchmarks import cells, timing
    measure, timed = timing.measure_throughput, []
    monkeypatch.setattr(timing, "measure_throughput", lambda *a, **kw: timed.append(measure(*a, **kw)) or timed[-1])
    config = PRESETS["hw1-q4"].replace(impl="numpy-batch", batch_size=32, dtype="float32", train_limit=2048,
                                       test_limit=100)
    rec = Recorder()
    cells.run_group([Cell("throughput", config)], fashion, rec, PEAKS,
                    BenchOptions(repeats=1000, repeat_seconds=0.01, cell_budget=0.25, paired_reference=False))
    outcome, = rec.closed
    assert outcome.status == "FINISHED", outcome.reason
    assert re.match(r"(timed|stopped after) \d+ of 1000 repeats", outcome.summary["budget_note"])
    tags = {k: v for _, t, _ in rec.logged for k, v in (t or {}).items()}
    assert tags["bpb.budget"] == outcome.summary["budget_note"]
    assert 3 <= len(timed[0][0]) <= 20                      # the rates of the repeats that ran
