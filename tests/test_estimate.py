"""The estimate a bench session prints before its first cell (``benchmarks/estimate.py``),
from fake earlier durations: every cell is counted, and the words say how."""
import pytest

from benchmarks.config import PRESETS
from benchmarks.estimate import estimate
from benchmarks.plan import BenchOptions, Cell
from tracking.durations import Durations

Q4, Q3 = PRESETS["hw1-q4"], PRESETS["hw1-q3"]
CELLS = [Cell("accuracy", Q4.replace(impl="torch-cpu")), Cell("accuracy", Q3.replace(impl="jax-cpu", dtype="float32")),
         Cell("throughput", Q4.replace(impl="numpy-batch", dtype="float32", batch_size=32)),
         Cell("throughput", Q4.replace(impl="numpy-sample", dtype="float32"))]
FULL = BenchOptions.make("full")            # 5 repeats of 0.4 s, a 180 s cell budget
THROUGHPUT = 2 * (5 * 0.4 + 3)              # two new throughput cells, 5 s each


def minutes(line: str) -> float:
    return float(line.split(" min ")[0].split()[-1])


def test_a_first_session_counts_its_accuracy_cells_at_their_budget():
    """The line that said "about 0.2 min" and left the accuracy cells out."""
    line = estimate(CELLS, FULL, Durations(), 60000)
    assert line.startswith("estimate: up to about ") and minutes(line) == pytest.approx((THROUGHPUT + 2 * 180) / 60, abs=0.05)
    assert "2 accuracy cells never run here, counted at their 180 s training budget each" in line
    assert "the steps around the cells not counted: no earlier session of this mode here" in line


def test_accuracy_cells_run_in_another_mode_are_projected_from_their_rate():
    """A quick session trained torch-cpu's hw1-q4 cell at 3,000 samples/s with 4 s beside
    training: the full cell's 3 epochs of 60,000 samples take 60 s, and 4 s more; jax-cpu's
    rate would project 300 s, beyond the budget, which bounds it."""
    rates = {("torch-cpu", "hw1-q4", "float64", 1): (3000.0, 4.0), ("jax-cpu", "hw1-q3", "float32", 256): (1000.0, 2.0)}
    line = estimate(CELLS, FULL, Durations(rates=rates), 60000)
    assert line.startswith("estimate: about ") and minutes(line) == pytest.approx((THROUGHPUT + 64 + 182) / 60, abs=0.05)
    assert "2 new accuracy cells from their training rate in earlier sessions here" in line


def test_a_session_like_the_last_one_takes_as_long_with_the_steps_around_its_cells():
    earlier = Durations("ab12cd34" + "0" * 24, {c.name: 30.0 for c in CELLS}, beside=90.0)
    line = estimate(CELLS, FULL, earlier, 60000)
    assert line == ("estimate: about 3.5 min for 4 cells and the steps around them (4 cells as long as in session "
                    "ab12cd34; 1.5 min around the cells as in session ab12cd34 (probes, workers starting, the report, "
                    "the pytest-benchmark suite where it ran))")


def test_without_a_budget_an_accuracy_cell_never_run_is_named_not_counted():
    line = estimate(CELLS, BenchOptions.make("full", cell_budget=None), Durations(), 60000)
    assert line.startswith("estimate: more than about ") and minutes(line) == pytest.approx(THROUGHPUT / 60, abs=0.05)
    assert "2 accuracy cells never run here not counted: no cell budget bounds them" in line


@pytest.mark.integration
def test_a_dry_run_gives_later_sessions_its_cells_and_its_rates(dry_run):
    """Read back from a real store: the dry run's own mode gets its cells and the time around
    them; another mode gets the training rate of each accuracy configuration it ran."""
    import tracking
    from tracking.durations import earlier_durations
    uri, proc, _ = dry_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tracking.connect(uri)
    same, full = earlier_durations(store, "dry-run"), earlier_durations(store, "full")
    assert same.session and len(same.seconds) == int(proc.stdout.split("[1/")[1].split("]")[0])
    assert same.beside is not None and same.beside > 0
    accuracy = {tuple(name.split("/")[1:5]) for name in same.seconds if name.startswith("accuracy/")}
    assert {(i, p, d, f"b{b}") for i, p, d, b in full.rates} == accuracy and not full.session
    assert all(rate > 0 and beside >= 0 for rate, beside in full.rates.values())
