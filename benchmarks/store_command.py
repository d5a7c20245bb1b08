"""``python -m benchmarks store check|repair``: a tracking store's state, and the repair of a
half-built SQLite store (``tracking/repair.py``; docs/reliability.md)."""
from __future__ import annotations

import tracking


def add_parser(sub, add_tracking_option) -> None:
    """The ``store`` subcommand (called by ``benchmarks/cli.py``)."""
    p = sub.add_parser("store", help="check a tracking store, or repair a half-built SQLite store",
                       description="check: prepare the store as a session would (a new one is made, one written by "
                                   "an older MLflow migrated on a copy) and say what it holds. repair: rebuild a "
                                   "SQLite store that an interrupted set-up or migration left half-built, keeping "
                                   "every run; the old file is kept beside it.")
    p.add_argument("action", choices=("check", "repair"))
    add_tracking_option(p)
    p.set_defaults(func=cmd_store)


def cmd_store(args) -> int:
    uri = tracking.resolve_uri(args.tracking_uri)
    print(tracking.check_store(uri) if args.action == "check" else tracking.repair_store(uri))
    return 0
