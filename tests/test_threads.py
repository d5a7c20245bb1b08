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


def test_worker_environment_keeps_what_the_user_set():
    from benchmarks import threads
    env = {"OMP_WAIT_POLICY": "ACTIVE", "PATH": "/bin", "OPENBLAS_CORETYPE": "Haswell"}
    assert threads.set_worker_env(env) == {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_CORETYPE": "Haswell",
                                           "OPENBLAS_THREAD_TIMEOUT": "4"}
    assert not {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"} & set(threads.WORKER_ENV)


def test_threads_option_defaults_to_the_choice_and_overrides_it():
    from benchmarks.cli import build_parser
    assert build_parser().parse_args(["bench"]).threads is None
    assert build_parser().parse_args(["bench", "--threads", "1"]).threads == 1
