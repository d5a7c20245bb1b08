"""studies/fresh.py: the lab's one fresh-process runner and its busy loop."""
import os

from studies import fresh


def test_a_function_runs_in_a_fresh_process_with_the_environment_given():
    assert fresh.run("json:loads", {"s": '{"a": [1, 2]}'}) == {"a": [1, 2]}
    assert fresh.run("os:getenv", {"key": "BPB_FRESH_PROBE"}, env={"BPB_FRESH_PROBE": "7"}) == "7"
    assert fresh.run("os:getpid", {}) != os.getpid()


def test_a_child_that_fails_is_an_error_with_its_stderr():
    out = fresh.run("json:loads", {"s": "not json"})
    assert set(out) == {"error"} and "JSONDecodeError" in out["error"]


def test_busy_spins_while_the_block_runs_and_not_after():
    with fresh.busy(2, settle=0.0) as spin:
        assert len(spin) == 2 and all(s.poll() is None for s in spin)
    assert all(s.poll() is not None for s in spin)
    with fresh.busy(0) as none:
        assert none == []
