"""The team's subcommands of ``python -m benchmarks``: ``server`` (MLflow on PostgreSQL for a
team), ``pg`` (a local PostgreSQL in a folder), ``store`` (check or repair a store) and
``fleet-host`` (this machine as a host of a Ray fleet, ``benchmarks/fleet.py``), and the
options of ``bench`` that run it on a fleet. Their
handlers are in ``benchmarks/commands.py``, the rest of the parser in ``benchmarks/cli.py``."""
from __future__ import annotations

from benchmarks import commands
from benchmarks.argtypes import machine_label, non_negative_int, port, positive_int
from tracking import pg, server


def add_tracking_option(p) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def add_fleet_options(p) -> None:
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="run on this Ray fleet (HOST:PORT, auto, "
                   "ray://HOST:10001), every session at once (benchmarks/fleet.py)")
    p.add_argument("--hosts", choices=("all", "shard"), default="all",
                   help="with --ray: all: every host runs the matrix, a session each; shard: the hosts of one "
                        "label share it, a session per label, to finish sooner (default: all)")


def add_pg_options(p) -> None:
    p.add_argument("--pg-dir", default=None,
                   help=f"folder of the local PostgreSQL (default: $BPB_PG_DIR, else {pg.default_dir()})")
    p.add_argument("--pg-port", type=port, default=5432, help="its socket's port number (default: %(default)s)")
    p.add_argument("--pg-database", default=pg.DATABASE, help="the database, made if absent (default: %(default)s)")


def add_store_parsers(sub) -> None:
    """``server``, ``pg``, ``store`` and ``fleet-host``: what a team sets up once."""
    s = sub.add_parser("server", help="run an MLflow tracking server on PostgreSQL for a team",
                       description=server.__doc__.splitlines()[0])
    s.add_argument("--backend-store-uri", default=None,
                   help="PostgreSQL URI (default: $MLFLOW_BACKEND_STORE_URI, else a local PostgreSQL in --pg-dir, "
                        "started here and stopped with the server)")
    s.add_argument("--artifacts-destination", default=str(server.DEFAULT_ARTIFACTS),
                   help="where the server keeps artifacts: a folder, or s3://bucket/path with MLFLOW_S3_ENDPOINT_URL "
                        "and AWS_* in the environment (default: %(default)s)")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s; 0.0.0.0 for every one)")
    s.add_argument("--port", type=port, default=5000, help="port (default: %(default)s)")
    s.add_argument("--workers", type=positive_int, default=1,
                   help="server worker processes (default: %(default)s: with more, uvicorn's shared socket loses "
                        "TCP_NODELAY and every call waits about 40 ms for a delayed ACK; docs/performance.md)")
    s.add_argument("--allowed-hosts", default=None,
                   help="Host headers accepted, for a server reached by name (MLflow's default: localhost and "
                        "private addresses)")
    s.add_argument("--auth", action="store_true",
                   help="MLflow's basic-auth app: admin from MLFLOW_AUTH_ADMIN_USERNAME/MLFLOW_AUTH_ADMIN_PASSWORD "
                        "or --auth-file; clients use MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
    s.add_argument("--auth-file", default=None,
                   help="ini file with [mlflow] admin_username and admin_password (mode 0600) instead of the environment")
    s.add_argument("--default-permission", choices=server.PERMISSIONS, default="READ",
                   help="with --auth: what a user may do with experiments they were given no permission on "
                        "(default: %(default)s)")
    s.add_argument("--auth-cache-seconds", type=non_negative_int, default=60,
                   help="with --auth: how long a worker trusts a checked password (default: %(default)s; 0 checks "
                        "every request: each check is a deliberately slow hash, about 0.3 s here, measured in "
                        "docs/performance.md)")
    add_pg_options(s)
    s.set_defaults(func=commands.cmd_server)

    p = sub.add_parser("pg", help="a local PostgreSQL in a folder: start, stop, status",
                       description=pg.__doc__.splitlines()[0])
    p.add_argument("action", choices=("start", "stop", "status"))
    add_pg_options(p)
    p.set_defaults(func=commands.cmd_pg)

    store = sub.add_parser("store", help="check a tracking store, or repair a half-built SQLite store",
                           description="check: prepare the store as a session would (a new one is made, one written "
                                       "by an older MLflow migrated on a copy) and say what it holds. repair: rebuild "
                                       "a SQLite store that an interrupted set-up or migration left half-built, keeping "
                                       "every run; the old file is kept beside it.")
    store.add_argument("action", choices=("check", "repair"))
    add_tracking_option(store)
    store.set_defaults(func=commands.cmd_store)

    fleet = sub.add_parser("fleet-host", help="make this machine a host of a Ray fleet (`bench --ray`)",
                           description="ray start, with one bench_host, no CPUs for other Ray work, the machine "
                                       "label and the project importable in every process it starts "
                                       "(benchmarks/fleet.py). Stop it with `ray stop`.")
    fleet.add_argument("--label", type=machine_label, required=True, help="this machine's label in the store")
    where = fleet.add_mutually_exclusive_group(required=True)
    where.add_argument("--head", action="store_true", help="start the fleet here (its head)")
    where.add_argument("--address", default=None, help="join the fleet whose head is at HOST:PORT")
    fleet.add_argument("--port", type=port, default=6379, help="with --head: the head's port (default: %(default)s)")
    fleet.set_defaults(func=commands.cmd_fleet_host)
