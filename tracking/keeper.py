"""The server's keeper, and its pid file: what ``python -m benchmarks server`` started ends
with it, even when it is killed with kill -9.

``server`` starts the keeper (``python -m tracking.keeper``) first, in a session of its
own, with the read end of a pipe as its stdin, and tells it on that pipe, one JSON line at a
time, what it has started: the PostgreSQL cluster, then the mlflow server's process group.
A server that stops normally ends them itself and says goodbye. When the pipe closes without
a goodbye, the server is gone (nothing else holds the pipe's write end): the keeper ends the
mlflow server's group (TERM, then KILL) and stops the cluster (``pg_ctl stop -m fast``).
The mlflow server also gets SIGTERM from the kernel when the server dies (PR_SET_PDEATHSIG);
that alone would leave its uvicorn child serving, hence the keeper. PostgreSQL is out of
reach of PR_SET_PDEATHSIG: ``pg_ctl start`` detaches the postmaster (its parent becomes
init), and as root it runs under ``runuser``, whose change of user clears the setting.

The pid file (one per port, in ``$XDG_CACHE_HOME/backprop-bench/run``, else
``~/.cache/backprop-bench/run``) names the server, its keeper, the group and the cluster, with
each process's start time, so a pid reused by another program is never taken for ours. A
server starting on a port whose pid file names a live server refuses; one whose file names a
dead server ends what that server left running (should its keeper have died with it) and
takes the port over.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tracking import pg, procs
from tracking.cache import user_cache

ROOT = Path(__file__).resolve().parents[1]
PRIVATE_PREFIX = "bpb-server-"       # the server's private folder (tracking/server.py), removed in ``release``


# ---- the pid file -------------------------------------------------------------------------
def pid_path(port: int) -> Path:
    # the user's cache (as datasets.py's), not $XDG_RUNTIME_DIR: tox passes only the former on,
    # and every start must find the file; a file from an earlier boot is ignored (``read``)
    folder = user_cache() / "run"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RuntimeError(f"cannot make {folder} for the server's pid file ({exc.strerror}); "
                           "set XDG_CACHE_HOME to a folder of yours") from None
    return folder / f"server-{port}.json"


def read(path: Path) -> dict:
    """The record in ``path``; {} when there is none, it is damaged, or it is from an earlier boot."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("boot") == procs.boot_id() else {}


def write(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({**record, "boot": procs.boot_id()}))
    os.replace(tmp, path)


def me(pid: int | None = None) -> list:
    pid = pid or os.getpid()
    return [pid, procs.start_time(pid)]


def release(held: dict) -> list[str]:
    """End what ``held`` (a pid file's record) says was started: the mlflow server's group,
    then the cluster, and remove the server's private folder (its auth config); returns what was
    ended, in words."""
    ended = []
    private = Path(held.get("private") or "")
    if private.name.startswith(PRIVATE_PREFIX):     # only a folder the server made, whatever the file says
        shutil.rmtree(private, ignore_errors=True)
    pgid, started = held.get("group") or (None, None)
    if pgid and procs.end_group(pgid, started):
        ended.append(f"the mlflow server (process group {pgid})")
    if held.get("pg"):
        folder, port = held["pg"]
        try:
            if pg.Cluster(folder, port).stop():
                ended.append(f"PostgreSQL in {folder}")
        except (pg.PgError, OSError) as exc:
            ended.append(f"not PostgreSQL in {folder}: {exc}")
    return ended


def take_over(port: int, log=print) -> Path:
    """Claim ``port``'s pid file for this process. Raises RuntimeError naming the live server
    that holds it; ends what a dead one left running."""
    path = pid_path(port)
    old = read(path)
    if old and procs.alive(*old.get("server", (None, None))):
        pid = old["server"][0]
        raise RuntimeError(f"a backprop-bench server (pid {pid}) already serves port {port} (its pid file is "
                           f"{path}); stop it first (kill {pid}) or choose another --port")
    if old:
        keeper = old.get("keeper") or (None, None)
        deadline = time.monotonic() + 40             # a keeper may be ending them right now
        while procs.alive(*keeper) and time.monotonic() < deadline:
            time.sleep(0.2)
        ended = release(old)
        if ended:
            log(f"the server recorded in {path} (pid {old['server'][0]}) is gone; ended what it left running: "
                + ", ".join(ended))
    try:
        write(path, {"server": me(), "port": port})
    except OSError as exc:
        raise RuntimeError(f"cannot write the server's pid file {path}: {exc.strerror}") from None
    return path


def drop(path: Path) -> None:
    """Remove the pid file if it is still this process's."""
    if read(path).get("server") == me():
        path.unlink(missing_ok=True)


# ---- the keeper, seen from the server ------------------------------------------------------
class Keeper:
    """The keeper process and the pid file, from the server's side: ``hold`` each thing as it
    is started, ``close`` after ending them all."""

    def __init__(self, path: Path):
        self.path, self.record = path, read(path)
        readable, self.pipe = os.pipe()          # both ends close on exec: only the keeper gets one, as stdin
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
        # its own session: Ctrl-C in the terminal and a signal to the server's group miss it
        self.proc = subprocess.Popen([sys.executable, "-m", "tracking.keeper"], stdin=readable, env=env,
                                     start_new_session=True)
        os.close(readable)
        self.hold(server=me(), keeper=me(self.proc.pid), port=self.record.get("port"))

    def hold(self, **what) -> None:
        self.record.update(what)
        try:                                     # a safety net: the server ends them itself when it can
            write(self.path, self.record)
            os.write(self.pipe, (json.dumps(what) + "\n").encode())
        except OSError:
            pass

    def close(self) -> None:
        try:
            os.write(self.pipe, b'{"bye": true}\n')
            os.close(self.pipe)
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        drop(self.path)


# ---- the keeper process -------------------------------------------------------------------
def main() -> int:
    """Read what the server holds until it says goodbye; if the pipe closes first (the server
    died) or SIGTERM comes, end it all."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def gone(*_):
        raise SystemExit

    signal.signal(signal.SIGTERM, gone)
    held = {}
    try:
        for line in sys.stdin:
            message = json.loads(line)
            if message.get("bye"):
                return 0
            held.update(message)
    except SystemExit:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ended = release(held)
    server = (held.get("server") or ["?"])[0]
    try:
        print(f"backprop-bench server (pid {server}) is gone; its keeper ended "
              + (", ".join(ended) if ended else "nothing (nothing was left running)"), flush=True)
    except OSError:
        pass
    try:
        record_path = pid_path(held["port"]) if held.get("port") else None
        if record_path and read(record_path).get("server") == held.get("server"):
            record_path.unlink(missing_ok=True)
    except (RuntimeError, OSError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
