"""``python -m benchmarks`` for the tests, without paying for its heaviest imports each time.

Every command a test runs through the CLI is a process of its own, with the caller's arguments,
folder, environment and output, as users start it. Most of its CPU time went into importing
MLflow, SQLAlchemy, pandas and matplotlib: 3.1 CPU-s of a 5 s ``report`` on the 2-core machine of
docs/performance.md, for each of the ~200 commands of a test run. So each pytest worker starts
one *prewarmed parent* (``python -m tests.prewarm SOCKET``) that imports them once (``PRELOAD``)
and forks one child per command. The child takes the caller's stdout and stderr (passed over a
unix socket), folder, environment and arguments (and a session of its own when asked), rebuilds
``sys.stdout``/``sys.stderr`` as CPython does at its start, and runs ``benchmarks`` as ``python
-m`` does (``runpy``). The caller gets a ``Child``, the part of ``subprocess.Popen`` the tests
use, with the command's own pid, so that signals reach the command itself.

A fork cannot give what is read only at a start: the interpreter's settings (``PYTHON*``, the
locale) and what a preloaded library reads when imported (BLAS and OpenMP thread counts,
matplotlib's settings). A command whose environment differs from the parent's in one of those
(``STARTUP``) runs in a fresh interpreter, as does every command under ``BPB_TESTS_FRESH=1`` (to
check that the parent hides nothing). The project's own modules are never preloaded: each child
imports them with its own environment. Its command line in ``/proc`` is the parent's: a command
whose command line is looked at (the team server's) is started fresh (tests/team_server.py)."""
from __future__ import annotations

import atexit
import contextlib
import io
import json
import locale
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

PRELOAD = ("numpy", "pandas", "sqlalchemy", "alembic", "requests", "filelock", "psycopg", "mlflow",
           "mlflow.tracking", "mlflow.store.db.utils", "mlflow.store.db.base_sql_model",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.tracking.rest_store",
           "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg")
# read once, at an interpreter's or a preloaded library's start: a change needs a fresh process
STARTUP = re.compile(r"^(PYTHON(?!UNBUFFERED$)|LC_|LANG|OPENBLAS_|GOTO|OMP_|KMP_|GOMP_|MKL_|MPL|MATPLOTLIB"
                     r"|MLFLOW_(LOGGING|CONFIGURE)|SQLALCHEMY)|_NUM_THREADS$")
FRESH_ENV = "BPB_TESTS_FRESH"


# ---- the prewarmed parent ------------------------------------------------------------------

def serve(path: str) -> None:
    """Import ``PRELOAD``, listen on ``path``, fork a child per request; end with the caller."""
    for name in PRELOAD:
        __import__(name)
    import matplotlib
    matplotlib.use("Agg")
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is for the children, as for Popen's
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False), wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    caller = os.getppid()
    waiting: dict[int, socket.socket] = {}            # child pid -> the connection that asked for it
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    print("ready", flush=True)
    while os.getppid() == caller:
        for key, _ in sel.select(timeout=1.0):
            if key.fileobj is wake_r:               # a SIGCHLD: reaped below
                try:
                    while wake_r.recv(512):
                        pass
                except BlockingIOError:
                    pass
                continue
            conn, _ = listener.accept()
            request, fds = receive(conn)
            sys.stdout.flush(), sys.stderr.flush()
            set_up, said = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(set_up)
                run_child(request, fds, said, [listener, wake_r, wake_w, conn, *waiting.values()])
            for fd in {*fds, said}:
                os.close(fd)
            os.read(set_up, 1)        # as Popen returns: once the child has its session, output and folder
            os.close(set_up)
            send(conn, {"pid": pid})
            waiting[pid] = conn
        while waiting and (ended := os.waitpid(-1, os.WNOHANG))[0]:
            pid, status = ended
            conn = waiting.pop(pid, None)
            if conn is not None:
                try:
                    send(conn, {"code": os.waitstatus_to_exitcode(status)})
                except OSError:        # the caller is gone
                    pass
                conn.close()
    os._exit(0)


def run_child(request: dict, fds: list[int], said: int, inherited: list[socket.socket]) -> None:
    """In the forked child: become the command, run it, never return to the parent's loop."""
    code = 1
    try:
        for s in inherited:
            s.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if request["new_session"]:
            os.setsid()
        for target, fd in zip((1, 2), fds):
            os.dup2(fd, target)
        for fd in set(fds):
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = os.getcwd()                      # what ``python -m`` puts first
        streams(unbuffered=bool(os.environ.get("PYTHONUNBUFFERED")))
        os.write(said, b"1"), os.close(said)
        sys.argv = ["-m", *request["args"]]
        import runpy
        runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
        code = 0 if code is None else code if isinstance(code, int) else 1
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        from benchmarks.leave import leave             # a command's usual exit (benchmarks/__main__.py)
        try:
            leave(code)
        finally:
            os._exit(code)


def streams(unbuffered: bool) -> None:
    """``sys.stdout`` and ``sys.stderr`` on fds 1 and 2 as CPython makes them at its start."""
    encoding = locale.getpreferredencoding(False)
    for fd, name, errors in ((1, "stdout", "strict"), (2, "stderr", "backslashreplace")):
        raw = io.FileIO(fd, "w", closefd=False)
        binary = raw if unbuffered else io.BufferedWriter(raw)
        text = io.TextIOWrapper(binary, encoding=encoding, errors=errors, write_through=unbuffered,
                                line_buffering=name == "stderr" or os.isatty(fd))
        setattr(sys, name, text), setattr(sys, f"__{name}__", text)


def send(conn: socket.socket, message: dict, fds=()) -> None:
    data = json.dumps(message).encode() + b"\n"      # a request fits a unix socket's buffer whole
    socket.send_fds(conn, [data], list(fds)) if fds else conn.sendall(data)


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            raise ConnectionError("the request was cut short")
        data += more
    return json.loads(data), list(fds)


# ---- the caller's side ---------------------------------------------------------------------

class Child:
    """A command forked by the prewarmed parent: what the tests use of ``subprocess.Popen``."""

    def __init__(self, args, conn: socket.socket, stdout, stderr):
        self.args, self.conn, self.stdout, self.stderr = args, conn, stdout, stderr
        self.returncode, self.buffer, self.readers = None, b"", None
        self.pid = self.message(None)["pid"]

    def message(self, timeout):
        while b"\n" not in self.buffer:
            self.conn.settimeout(timeout)
            try:
                more = self.conn.recv(4096)
            except (socket.timeout, BlockingIOError):
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            if not more:
                raise ConnectionError(f"the prewarmed parent ended before {self.args} did")
            self.buffer += more
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def poll(self):
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(0)
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            self.returncode = self.message(timeout)["code"]
            self.conn.close()
        return self.returncode

    def communicate(self, input=None, timeout=None):
        if self.readers is None:             # once: a call after a timeout goes on with them
            self.readers = {}
            for name in ("stdout", "stderr"):
                stream = getattr(self, name)
                if stream is not None:
                    box = self.readers[name] = [None]
                    thread = threading.Thread(target=lambda s=stream, b=box: b.__setitem__(0, s.read()), daemon=True)
                    thread.start()
                    box.append(thread)
        for box in self.readers.values():
            box[1].join(timeout)
            if box[1].is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(timeout)
        for name in self.readers:
            getattr(self, name).close()
        return tuple(self.readers[n][0] if n in self.readers else None for n in ("stdout", "stderr"))

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)


_parent: dict = {}


def parent() -> tuple[str, dict]:
    """This process's prewarmed parent (started on first use, ended at exit): its socket's path
    and the environment it started with."""
    if _parent.get("pid") != os.getpid():              # none yet in this process
        from tests.helpers import ROOT
        folder = tempfile.mkdtemp(prefix="bpb-pw-")    # short: a socket's path is at most 107 bytes
        path, env = os.path.join(folder, "s"), {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "tests.prewarm", path], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the prewarmed parent did not start (exit {proc.wait()})")

        def end():
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(folder, ignore_errors=True)
        atexit.register(end)
        _parent.update(pid=os.getpid(), path=path, env=env)
    return _parent["path"], _parent["env"]


def needs_fresh(env: dict, started: dict) -> bool:
    """True when ``env`` differs from the parent's ``started`` in what is read only at a start."""
    changed = {k for k in env.keys() | started.keys() if env.get(k) != started.get(k)}
    return bool(os.environ.get(FRESH_ENV)) or any(STARTUP.search(k) for k in changed)


def start(args, *, env: dict, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=False):
    """``python -m benchmarks ARGS`` with ``env`` (the whole environment) in ``cwd``: a ``Child``
    of the prewarmed parent, or a ``subprocess.Popen`` where a fresh interpreter is needed."""
    path, started = parent()
    if needs_fresh(env, started):
        return subprocess.Popen([sys.executable, "-m", "benchmarks", *args], cwd=cwd, env=env, stdout=stdout,
                                stderr=stderr, text=True, start_new_session=start_new_session)
    ends, ours = [], []
    for target, given in ((1, stdout), (2, stderr)):
        if given == subprocess.PIPE:
            r, w = os.pipe()
            ours.append(open(r, encoding=locale.getpreferredencoding(False)))
            ends.append(w)
        elif given == subprocess.STDOUT:
            ours.append(None)
            ends.append(ends[0])
        else:
            ours.append(None)
            ends.append(target if given is None else given if isinstance(given, int) else given.fileno())
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    send(conn, {"args": [str(a) for a in args], "env": env, "cwd": str(cwd), "new_session": start_new_session}, ends)
    for given, fd in zip((stdout, stderr), ends):
        if given == subprocess.PIPE:
            os.close(fd)
    return Child([sys.executable, "-m", "benchmarks", *map(str, args)], conn, *ours)


if __name__ == "__main__":
    serve(sys.argv[1])
