"""The prewarmed parent (tests/prewarm.py), through which the tests start ``python -m
benchmarks``: a command forked from it says and does what a fresh interpreter says and does, in
the caller's folder, with the caller's environment and output; a command whose environment
changes what is read at a start gets a fresh interpreter."""
import os
import signal
import subprocess
import sys

import pytest

from tests import prewarm
from tests.helpers import ROOT, start_cli

pytestmark = pytest.mark.integration          # starts processes


def fresh(args, cwd, env):
    done = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120)
    return done.returncode, done.stdout, done.stderr


def forked(args, cwd, env):
    proc = start_cli(*args, cwd=cwd, env=env)
    assert isinstance(proc, prewarm.Child)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("args, env", [
    (["--help"], {}),
    (["bogus"], {}),
    (["bench", "--impl", "no-such-impl"], {}),
    (["report", "--output-dir", "out"], {"MLFLOW_TRACKING_URI": "sqlite:///here.db"}),    # the environment's
    (["history", "--tracking-uri", "sqlite:///here.db", "--output-dir", "out"], {}),     # relative: the folder's
], ids=["help", "usage-error", "bad-flag", "env", "cwd"])
def test_a_forked_command_says_what_a_fresh_one_says(args, env, tmp_path):
    (tmp_path / "fresh").mkdir(), (tmp_path / "forked").mkdir()
    want = fresh(args, tmp_path / "fresh", env)
    got = forked(args, tmp_path / "forked", env)
    assert got == tuple(text.replace(str(tmp_path / "fresh"), str(tmp_path / "forked")) if isinstance(text, str)
                        else text for text in want)
    assert want[0] in (0, 2) and (want[1] or want[2])          # each says something, and not a crash
    # whatever it left behind, it left in its own folder
    assert sorted(p.name for p in (tmp_path / "forked").iterdir()) == sorted(p.name for p in (tmp_path / "fresh").iterdir())


def test_a_forked_command_streams_unbuffered_and_a_signal_reaches_it(tmp_path):
    """PYTHONUNBUFFERED as the tests set it: each line arrives as it is written; SIGTERM sent to
    the pid the caller holds ends the command itself, with the exit status a fresh one gives (130, as for Ctrl-C)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = start_cli("bench", "--dry-run", "--impl", "numpy-sample", "--threads", "1", "--tracking-uri", uri,
                     "--output-dir", str(tmp_path / "out"), env={"PYTHONUNBUFFERED": "1", "CI": "1"},
                     stderr=subprocess.STDOUT, start_new_session=True)
    assert isinstance(proc, prewarm.Child) and os.getpgid(proc.pid) == proc.pid
    for line in proc.stdout:
        if line.startswith("session "):                  # the session is open: the command is ours
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, rest                # as Ctrl-C (tests/test_commands.py)
    assert "Traceback" not in rest


def test_what_is_read_at_a_start_gets_a_fresh_interpreter(monkeypatch):
    started = {"PATH": "/bin", "OMP_NUM_THREADS": "2", "CI": "1"}
    assert not prewarm.needs_fresh({**started, "CI": "0", "MLFLOW_TRACKING_USERNAME": "u"}, started)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED", "LC_ALL", "MPLBACKEND"):
        assert prewarm.needs_fresh({**started, name: "7"}, started), name
    assert prewarm.needs_fresh({k: v for k, v in started.items() if k != "OMP_NUM_THREADS"}, started)
    assert not prewarm.needs_fresh({**started, "PYTHONUNBUFFERED": "1"}, started)     # the child sets it up
    monkeypatch.setenv(prewarm.FRESH_ENV, "1")
    assert prewarm.needs_fresh(dict(started), started)
    proc = start_cli("--help")
    assert isinstance(proc, subprocess.Popen)
    assert proc.communicate(timeout=60)[0].startswith("usage: python -m benchmarks")
