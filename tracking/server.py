"""``python -m benchmarks server``: one MLflow tracking server for a team, on PostgreSQL.

    python -m benchmarks server                          # local PostgreSQL in a folder (tracking/pg.py)
    python -m benchmarks server --backend-store-uri postgresql://user@db.example/mlflow --host 0.0.0.0
    python -m benchmarks server --auth                   # MLflow's basic-auth app

It runs ``mlflow server`` with the backend store on PostgreSQL (psycopg 3 as the driver: a
``postgresql://`` URI is read as ``postgresql+psycopg://``) and proxied artifacts
(``--artifacts-destination``: a local folder, or an S3-compatible store), bound to 127.0.0.1
unless told otherwise, and waits until it answers before saying where it is.

Secrets never reach argv, the terminal or a log: the backend URI (which may hold a database
password) travels in MLFLOW_BACKEND_STORE_URI, the admin credentials in MLFLOW_AUTH_ADMIN_*,
and every line the server prints passes through a filter that masks both passwords.

What it starts dies with it, even on kill -9 (``tracking/keeper.py``). It refuses a port
that something else listens on, naming what is there, and says "ready" only once the
listening socket is held by its own mlflow server's process group (``tracking/procs.py``).
"""
from __future__ import annotations

import configparser
import os
import re
import secrets as secrets_module
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, unquote

import tracking
from tracking import keeper, pg, procs
from tracking.failure import TrackingError

DEFAULT_ARTIFACTS = Path("server-data", "artifacts")
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
READY_SECONDS = 180


class ServerError(TrackingError):
    """The server cannot start or stay up; the message says why and how to fix it."""


@dataclass(frozen=True)
class ServerOptions:
    """What ``server`` runs (its options are ``python -m benchmarks server``'s, benchmarks/cli_store.py)."""
    backend_store_uri: str | None = None     # None: $MLFLOW_BACKEND_STORE_URI, else a local PostgreSQL
    artifacts_destination: str = str(DEFAULT_ARTIFACTS)
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    allowed_hosts: str | None = None
    auth: bool = False
    auth_file: str | None = None
    default_permission: str = "READ"
    auth_cache_seconds: int = 60
    pg_dir: str | None = None
    pg_port: int = 5432
    pg_database: str = pg.DATABASE


# ---- secrets ------------------------------------------------------------------------------
def with_driver(uri: str) -> str:
    """``postgresql://`` and ``postgres://`` name psycopg 3 explicitly (SQLAlchemy's default
    driver for them is psycopg2, which is not installed)."""
    return re.sub(r"^postgres(?:ql)?://", "postgresql+psycopg://", uri)


def uri_password(uri: str) -> str | None:
    try:
        password = urlsplit(uri).password
    except ValueError:
        return None
    return unquote(password) if password else None


def admin_credentials(auth_file: str | None) -> tuple[str, str]:
    """(username, password) from --auth-file, else MLflow's MLFLOW_AUTH_ADMIN_* variables."""
    if auth_file:
        path = Path(auth_file).expanduser()
        try:
            mode = path.stat().st_mode
            parser = configparser.ConfigParser()
            parser.read_string(path.read_text())
        except (OSError, configparser.Error) as exc:
            raise ServerError(f"--auth-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ServerError(f"--auth-file {path} can be read by others; `chmod 600 {path}` first")
        section = parser["mlflow"] if parser.has_section("mlflow") else {}
        user, password = section.get("admin_username"), section.get("admin_password")
        where = f"{path} ([mlflow] admin_username, admin_password)"
    else:
        user = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
        password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD")
        where = "MLFLOW_AUTH_ADMIN_PASSWORD (and MLFLOW_AUTH_ADMIN_USERNAME, default admin), or --auth-file"
    if not user or not password:
        raise ServerError(f"--auth needs an admin username and password: set {where}")
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_password     # the rule the auth app applies at its start
    try:
        _validate_password(password)
    except MlflowException as exc:
        raise ServerError(f"--auth: the admin password ({where}) is refused by MLflow: {exc.message}") from None
    return user, password


def relay(stream, secrets: list[str], out) -> None:
    """Copy the server's output line by line, every secret masked."""
    for line in iter(stream.readline, ""):
        for secret in secrets:
            line = line.replace(secret, "***")
        out.write(line)
        out.flush()


# ---- the server ---------------------------------------------------------------------------
def artifacts_uri(dest: str) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*://", dest):
        return dest
    folder = Path(dest).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def holder(sockets: dict[int, int]) -> str:
    """Who holds the listening ``sockets`` (``procs.listeners``), in words, passwords masked."""
    return tracking.display_uri(procs.describe(sockets))


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = READY_SECONDS, port: int | None = None,
               host: str = "127.0.0.1") -> None:
    """Wait until ``url`` answers /health; with ``port``, also until the socket listening
    there is held by ``proc``'s process group, so that no other server is taken for it."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"mlflow server exited with code {proc.returncode} before answering; its output is above")
        sockets = procs.listeners(port, host) if port is not None and procs.available() else None
        if sockets and not procs.socket_owners(sockets, procs.group_members(proc.pid)):
            raise ServerError(f"port {port} is answered by {holder(sockets)}, not by the mlflow server started "
                             f"here (pid {proc.pid}); stop it or choose another --port")
        if sockets == {}:                        # ours has not bound yet
            time.sleep(0.3)
            continue
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise ServerError(f"mlflow server did not answer {url}/health within {seconds:.0f} s; its output is above")


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """End the server's process group (mlflow, uvicorn and its workers): TERM (and CONT:
    ``procs.signal_group``), then KILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            procs.signal_group(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            time.sleep(0.2)                      # let the workers go with their parent
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


def run(options: ServerOptions) -> int:
    """The server until it ends or is stopped (Ctrl-C, SIGTERM): the exit status."""
    backend = options.backend_store_uri or os.environ.get("MLFLOW_BACKEND_STORE_URI")
    auth_user, password = admin_credentials(options.auth_file) if options.auth else (None, None)   # before starting anything
    try:
        pid_file = keeper.take_over(options.port, log=lambda line: print(line, flush=True))
    except RuntimeError as exc:
        raise ServerError(str(exc)) from None
    there = procs.listeners(options.port, options.host) if procs.available() else {}
    if there:
        keeper.drop(pid_file)
        raise ServerError(f"port {options.port} is already in use by {holder(there)}, which this command did not "
                         "start; stop it or choose another --port")
    guard = keeper.Keeper(pid_file)
    try:
        return start(options, backend, auth_user, password, guard)
    finally:
        guard.close()


def server_env() -> dict[str, str]:
    """This process's environment for an ``mlflow server`` or ``mlflow ui`` it starts, with two
    defaults that a user's own setting overrides: no GenAI job runner (MLflow starts a job runner
    and seven huey consumers, about 17 CPU-seconds and as many imports of MLflow, for jobs that
    nothing here submits) and no telemetry."""
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def start(options: ServerOptions, backend, auth_user, password, guard) -> int:
    """PostgreSQL (unless a backend is named), then the mlflow server; each is held by the
    keeper before it starts."""
    cluster, started_pg = None, False
    if not backend:
        cluster = pg.Cluster(options.pg_dir, options.pg_port)
        if not cluster.running():
            guard.hold(pg=[str(cluster.folder), cluster.port])
        started_pg = cluster.start(options.pg_database)
        if not started_pg:
            guard.hold(pg=None)                  # someone else's: left running
        print(f"PostgreSQL {'started' if started_pg else 'already running'} in {cluster.folder}", flush=True)
        backend = cluster.uri(options.pg_database)
    backend = with_driver(backend)
    env = {**server_env(), "MLFLOW_BACKEND_STORE_URI": backend}
    secrets = [s for s in (uri_password(backend),) if s]
    # option=value: a value can never be read as an option of its own
    cmd = [sys.executable, "-m", "mlflow", "server", f"--host={options.host}", f"--port={options.port}",
           f"--workers={options.workers}", "--serve-artifacts",
           f"--artifacts-destination={artifacts_uri(options.artifacts_destination)}"]
    if options.allowed_hosts:
        cmd += [f"--allowed-hosts={options.allowed_hosts}"]
    private = tempfile.mkdtemp(prefix=keeper.PRIVATE_PREFIX)       # 0700: the auth config lives here
    guard.hold(private=private)                  # a server killed with kill -9: its keeper removes it
    try:
        if options.auth:
            secrets.append(password)
            config = Path(private) / "basic_auth.ini"
            config.touch(mode=0o600)
            config.write_text("[mlflow]\n"
                              f"default_permission = {options.default_permission}\n"
                              f"database_uri = {backend.replace('%', '%%')}\n"
                              "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                              f"auth_cache_ttl_seconds = {options.auth_cache_seconds}\n")
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_AUTH_ADMIN_USERNAME=auth_user,
                       MLFLOW_AUTH_ADMIN_PASSWORD=password)
            # the UI's CSRF key, shared by the workers; a new one per start unless set (open
            # browser forms then need a reload after a restart)
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets_module.token_hex(32))
            secrets.append(env["MLFLOW_FLASK_SERVER_SECRET_KEY"])
            cmd += ["--app-name", "basic-auth"]
        return serve(cmd, env, secrets, options, backend, auth_user, guard)
    finally:
        shutil.rmtree(private, ignore_errors=True)
        if started_pg:
            cluster.stop()
            print(f"PostgreSQL in {cluster.folder} stopped", flush=True)


def serve(cmd, env, secrets, options: ServerOptions, backend, auth_user, guard) -> int:
    """Start the server in a process group of its own, held by the keeper and told to die
    with this process, relay its output, wait until it answers on a socket of its own, then
    until it ends (or Ctrl-C / SIGTERM stops it)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=procs.die_with_parent(signal.SIGTERM))
    guard.hold(group=keeper.me(proc.pid))
    relaying = threading.Thread(target=relay, args=(proc.stdout, secrets, sys.stdout), daemon=True)
    relaying.start()
    everywhere = options.host in ("0.0.0.0", "::")
    url = f"http://{'127.0.0.1' if everywhere else options.host}:{options.port}"
    shown = f"http://{socket.gethostname()}:{options.port}" if everywhere else url     # what other machines use
    try:
        wait_ready(url, proc, port=options.port, host=options.host)
        print(f"MLflow server ready at {url} (pid {proc.pid}): backend {tracking.display_uri(backend)}, "
              f"artifacts {options.artifacts_destination}, auth {f'on (admin {auth_user})' if auth_user else 'off'}\n"
              f"  on each machine: export MLFLOW_TRACKING_URI={shown}   (the UI is at the same address"
              f"{'; a name needs --allowed-hosts, an address does not' if everywhere else ''})", flush=True)
        code = proc.wait()
        relaying.join(timeout=5)
        print(f"mlflow server exited with code {code}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("stopping the MLflow server", flush=True)
        return 0
    finally:
        stop_group(proc)
