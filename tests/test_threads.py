"""The thread-count policy every entry point uses (benchmarks/threads.py): the default chosen
from the cores, the load and a contention probe; the environment a worker gets."""
import pytest


@pytest.mark.parametrize("cores, load, probe, threads, words", [
    (2, 0.3, 1.3, 2, "2 threads"),         # quiet: both cores
    (2, 1.1, None, 1, "busy"),             # no probe, one busy loop beside: 1 thread
    (2, 0.2, 0.4, 1, "contended"),         # load average still low (it lags), the probe sees the collapse
    (2, 1.2, 1.3, 2, "2 threads"),         # the load average still high from a run that ended: the probe decides
    (1, 0.0, None, 1, "one core"),
    (16, 3.2, 1.5, 13, "13 threads"),
    (2, None, None, 2, "load unknown"),
])
def test_default_threads_decisions(cores, load, probe, threads, words):
    from benchmarks import threads as policy
    n, reason = policy.choose_threads(cores, load, probe)
    assert (n, words in reason) == (threads, True), reason
    if load is not None:                   # None: default_threads reads this machine's
        assert policy.default_threads(cores=cores, load=load, probe=probe, measure=False) == (n, reason)


def test_threads_option_defaults_to_the_choice_and_overrides_it():
    from benchmarks.cli import build_parser
    assert build_parser().parse_args(["bench"]).threads is None
    assert build_parser().parse_args(["bench", "--threads", "1"]).threads == 1


@pytest.mark.timing
@pytest.mark.integration
def test_an_isolated_worker_runs_torch_as_fast_as_the_session_process(tmp_path):
    """Live timing (``pytest -m timing``): the same torch-cpu batch-1 cell at 2 threads, in a
    worker process (the default) and in the session's own process, interleaved. A worker
    environment that slows the libraries (a passive OpenMP wait did, 5x: docs/performance.md,
    "The workers' environment") shows as the worker's rate falling far below the other."""
    import re
    from tests.helpers import run_cli
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rates = {"--isolate": [], "--no-isolate": []}
    for _ in range(2):
        for mode in rates:
            proc = run_cli("bench", "--impl", "torch-cpu", "--presets", "hw1-q4", "--epochs", "1", "--train-limit", "3000",
                           "--batch-sizes", "1", "--dtypes", "float64", "--repeats", "3", "--threads", "2",
                           "--no-pytest-benchmark", mode, "--tracking-uri", uri, "--output-dir", str(tmp_path / "out"))
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            m = re.search(r"throughput hw1-q4: ([\d,]+) samples/s", proc.stdout)
            rates[mode].append(float(m.group(1).replace(",", "")))
    ratio = max(rates["--isolate"]) / max(rates["--no-isolate"])
    print(f"worker / session process, torch-cpu b1 f64 2 threads: {ratio:.2f} ({rates})")
    assert ratio > 0.6, rates
