"""A PostgreSQL server in a folder, for people without one: made, started and stopped by the
project (``python -m benchmarks pg start|stop|status``, and ``python -m benchmarks server``
when no backend store is named). The tests and CI use the same functions.

Layout of the folder: ``data/`` (the cluster, made by initdb on first start), ``socket/`` (its
only way in: no TCP port is opened) and ``postgres.log``. Connections come through the unix
socket with trust authentication; the socket folder is mode 0700, so only the cluster's owner
(and root) can connect, and there is no password to keep or leak.

PostgreSQL refuses to run as root. As root, the cluster belongs to the unprivileged user
``postgres`` (which Debian's package creates) and every server command runs through
``runuser``; that user must be able to reach the folder, which is why root's default folder is
``/var/lib/backprop-bench/pg`` rather than one under /root.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from tracking.failure import TrackingError

DATABASE = "mlflow"
SUPERUSER = "bpb"                 # the cluster's role, made by initdb
SYSTEM_USER = "postgres"          # who runs the cluster when we are root
SOCKET_MAX = 107                  # bytes in a unix socket path (sun_path), terminator excluded


class PgError(TrackingError):
    """The local PostgreSQL cannot be made, started or stopped; the message says how to fix it."""


def default_dir() -> Path:
    """``$BPB_PG_DIR``, else ``server-data/pg`` here (``/var/lib/backprop-bench/pg`` for root)."""
    if os.environ.get("BPB_PG_DIR"):
        return Path(os.environ["BPB_PG_DIR"]).expanduser()
    return Path("/var/lib/backprop-bench/pg") if os.geteuid() == 0 else Path("server-data", "pg")


def bindir() -> Path:
    """Where initdb and pg_ctl are: ``$BPB_PG_BIN``, PATH, or Debian's /usr/lib/postgresql/N/bin."""
    if os.environ.get("BPB_PG_BIN"):
        return Path(os.environ["BPB_PG_BIN"])
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent      # Debian links some tools into /usr/local/bin
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    raise PgError("PostgreSQL is not installed here (no initdb on PATH, in $BPB_PG_BIN or under "
                  "/usr/lib/postgresql/*/bin): `apt-get install postgresql`, or pass --backend-store-uri "
                  "for an existing PostgreSQL server")


def installed() -> str | None:
    """None where the binaries are found, else the reason they are not (tests skip on it)."""
    try:
        bindir()
        return None
    except PgError as exc:
        return str(exc)


class Cluster:
    """The cluster in ``folder``: its paths, its URI, and the commands that run it."""

    def __init__(self, folder: str | Path | None = None, port: int = 5432):
        self.folder = Path(folder or default_dir()).expanduser().absolute()
        self.port = port
        self.data, self.socket, self.log = self.folder / "data", self.folder / "socket", self.folder / "postgres.log"
        self.as_root = os.geteuid() == 0

    def uri(self, database: str = DATABASE) -> str:
        """The SQLAlchemy URI, with psycopg (version 3) as the driver; it holds no password."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket}&port={self.port}"

    # ---- running commands, as postgres when we are root -------------------------------------
    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(bindir() / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", SYSTEM_USER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if check and proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip().splitlines()
            raise PgError(f"{tool} failed (exit {proc.returncode}): {said[-1] if said else 'no output'}"
                          f"{self._log_hint()}")
        return proc

    def _log_hint(self) -> str:
        return f"; the server's log is {self.log}" if self.log.exists() else ""

    def _owner(self) -> tuple[int, int] | None:
        if not self.as_root:
            return None
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PgError("PostgreSQL refuses to run as root, and there is no user 'postgres' to run it "
                          "(the postgresql package creates one); run as an ordinary user instead") from None
        return entry.pw_uid, entry.pw_gid

    def _make_folder(self) -> None:
        sock = str(self.socket / f".s.PGSQL.{self.port}")
        if len(sock.encode()) > SOCKET_MAX:
            raise PgError(f"{self.folder} is too deep for a unix socket ({len(sock.encode())} bytes > {SOCKET_MAX}); "
                          "choose a shorter folder with --pg-dir")
        owner = self._owner()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket.mkdir(exist_ok=True)
        for path in (self.folder, self.socket):
            if owner:
                os.chown(path, *owner)
            os.chmod(path, 0o700)
        if owner and subprocess.run(["runuser", "-u", SYSTEM_USER, "--", "test", "-w", str(self.folder)],
                                    cwd="/").returncode != 0:
            raise PgError(f"the user {SYSTEM_USER} cannot write to {self.folder} (as root, PostgreSQL runs as "
                          f"{SYSTEM_USER}, who must be able to reach every folder above it); choose a folder "
                          "it can reach, e.g. --pg-dir /var/lib/backprop-bench/pg")

    # ---- the life cycle ---------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialised():
            return False
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def init(self) -> None:
        """initdb into ``data/``, then settings that keep it local: no TCP, a private socket."""
        if self.data.exists() and any(self.data.iterdir()) and not self.initialised():
            raise PgError(f"{self.data} exists and is not a PostgreSQL cluster; move it away or choose another --pg-dir")
        self._make_folder()
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                  "--no-locale", "--no-instructions")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# backprop-bench (tracking/pg.py): reachable only through this socket\n"
                       "listen_addresses = ''\n"
                       f"unix_socket_directories = '{self.socket}'\n"
                       "unix_socket_permissions = 0700\n")

    def start(self, database: str = DATABASE) -> bool:
        """Make the cluster on first use, start it unless it runs, make ``database`` if absent.
        Returns True when this call started it (so the caller knows whether to stop it)."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
            raise PgError(f"database name {database!r}: use lower-case letters, digits and _ (at most 63)")
        if not self.initialised():
            self.init()
        else:
            self._make_folder()
        started = False
        if not self.running():
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", f"-p {self.port}",
                      "-w", "-t", "60", "start")
            started = True
        exists = self._run("psql", "-h", str(self.socket), "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
                           "-Atc", f"select 1 from pg_database where datname = '{database}'").stdout.strip()
        if exists != "1":
            self._run("createdb", "-h", str(self.socket), "-p", str(self.port), "-U", SUPERUSER, database)
        return started

    def stop(self) -> bool:
        """Stop the cluster (fast shutdown: open sessions are cut, committed data kept).
        Returns False when it was not running."""
        if not self.running():
            return False
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        return True

