"""What a failing tracking store means, in one line: its cause named, and what to do.

MLflow lets the store's own errors through (SQLite's, PostgreSQL's, the HTTP client's), each
wrapped once or twice and carrying the SQL it ran. ``describe`` finds the cause in that chain:
a full disk, a store file deleted or replaced while a command ran, a damaged file, a lock held
too long, a server that does not answer or keeps failing through MLflow's retries, an
unreachable PostgreSQL. Anything else is not a store failure it knows (None), and goes on as it
was. The CLI prints the line (exit 2, no traceback) and a session ends FAILED with it as its
reason where the store still takes that write.
"""
from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path


class TrackingError(Exception):
    """The tracking store cannot be used; the message says which URI and how to fix it."""


# (device, inode) of each SQLite store this process connected to: a file deleted or replaced
# under a running command is told apart from one that merely refused a write
_FILES: dict[Path, tuple[int, int]] = {}


def remember(path: Path) -> None:
    try:
        st = path.stat()
    except OSError:
        return
    _FILES[path.resolve()] = (st.st_dev, st.st_ino)


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    while exc is not None and exc not in found:
        found.append(exc)
        orig = getattr(exc, "orig", None)          # SQLAlchemy's wrapper of the driver's error
        if isinstance(orig, BaseException) and orig not in found:
            found.append(orig)
        exc = exc.__cause__ or exc.__context__
    return found


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _sqlite_said(chain: list[BaseException], text: str) -> str:
    """SQLite's own words: its exception's message, else the wrapper's ``(sqlite3.X) words``."""
    own = next((_first_line(e) for e in chain if type(e).__module__ == "sqlite3"), None)
    found = re.search(r"\(sqlite3\.\w+\)\s*([^\[\n|]+)", text)
    return own or (found.group(1).strip() if found else _first_line(chain[0]))


def retries() -> int:
    """How many times MLflow retries an HTTP request (its setting, or its default)."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES
    try:
        return int(MLFLOW_HTTP_REQUEST_MAX_RETRIES.get())
    except (TypeError, ValueError):
        return 7


def describe(exc: BaseException, uri: str, shown: str) -> str | None:
    """One line naming the cause when ``exc`` is the store at ``uri`` failing, else None.
    ``shown``: the URI as messages show it (its password masked)."""
    chain = _chain(exc)
    text = " | ".join(_first_line(e) for e in chain)
    low = text.lower()
    if uri.startswith("sqlite:///"):
        return _sqlite(Path(uri[len("sqlite:///"):]).expanduser(), chain, text, low)
    if uri.startswith(("http://", "https://")):
        return _server(shown, low, chain)
    if uri.startswith("postgresql"):
        reasons = ("connection failed", "could not connect", "connection refused", "server closed the connection",
                   "terminating connection", "connection is closed", "no such file or directory")
        if "operationalerror" in low and any(r in low for r in reasons):
            said = next((_first_line(e) for e in chain if "psycopg" in type(e).__module__), _first_line(chain[-1]))
            return f"the PostgreSQL database at {shown} is unreachable ({said}); check that it runs, then run again"
    return None


def _sqlite(path: Path, chain: list[BaseException], text: str, low: str) -> str | None:
    said = _sqlite_said(chain, text)
    beside = [Path(e.filename).resolve().parent for e in chain
              if isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename]
    if "database or disk is full" in low or path.resolve().parent in beside:   # not a full report folder
        said = "SQLite: database or disk is full" if "database or disk is full" in low else "no space left on device"
        return (f"the disk holding the tracking store {path} is full ({said}); free space there (df {path.parent}) "
                "and run again")
    sqlite_error = any(type(e).__module__ == "sqlite3" for e in chain) or "sqlite3." in low
    if not sqlite_error:
        return None
    if "file is not a database" in low or "malformed" in low:
        return (f"the tracking store {path} is damaged (SQLite: {said}); restore it from a copy, or salvage what is "
                f"readable into a new file: sqlite3 {path} .recover | sqlite3 {path}.recovered")
    was = _FILES.get(path.resolve())
    try:
        st = os.stat(path)
        now = (st.st_dev, st.st_ino)
    except OSError:
        now = None
    if was is not None and now is None:
        return (f"the tracking store {path} was deleted or moved away while this command ran (SQLite: {said}); put "
                "it back, or run again to start a new store there")
    if was is not None and now != was:
        return (f"the tracking store {path} was deleted or replaced while this command ran (SQLite: {said}); the "
                "file there now is another one")
    if "database is locked" in low:
        return (f"the tracking store {path} stayed locked by another process longer than SQLite waits (database "
                "is locked); run again when that process has finished")
    if "readonly database" in low:
        return f"the tracking store {path} refuses writes (SQLite: {said}): check its and its folder's permissions"
    if "unable to open database file" in low:
        return f"cannot open the tracking store {path} (SQLite: {said}): its folder is gone or not writable"
    if "disk i/o error" in low:
        return (f"a read or write of the tracking store {path} failed (SQLite: disk I/O error): check the disk "
                f"(dmesg) and its free space (df {path.parent})")
    return None


def _server(shown: str, low: str, chain: list[BaseException]) -> str | None:
    from mlflow.exceptions import RestException
    answer = next((e for e in chain if isinstance(e, RestException)), None)     # the server's own error
    if answer is not None and 500 <= answer.get_http_status_code() < 600:
        # MLflow's retries end in "too many 5xx error responses" (below); the server's own error
        # answer comes through instead where the client did not retry to the end (MLflow 3.18,
        # the server's database shutting down), so the line names no count of tries
        return (f"the tracking server at {shown} answered HTTP {answer.get_http_status_code()} ({answer.error_code}: "
                "an error inside the server, such as its database being down); see the server's log, then run again")
    n = retries() + 1
    tries = "one try" if n == 1 else f"{n} tries"
    status = re.search(r"too many (\d{3}) error responses|error code (\d{3})", low)
    if status and (status.group(1) or status.group(2)).startswith("5"):
        code = status.group(1) or status.group(2)
        each = "its" if n == 1 else "each of"
        return (f"the tracking server at {shown} answered HTTP {code} to {each} {tries} (an error inside the server, "
                "such as its database being down); see the server's log, then run again")
    for sign, reason in (("connection refused", "connection refused"), ("timed out", "timed out"),
                         ("name or service not known", "unknown host"), ("failed to establish", "no connection"),
                         ("connection aborted", "connection aborted"), ("remotedisconnected", "connection closed"),
                         ("max retries exceeded", "no answer")):
        if sign in low:
            return (f"the tracking server at {shown} did not answer in {tries} ({reason}); check that it runs "
                    "(python -m benchmarks server), or pass another --tracking-uri")
    return None


# what MLflow's system-metrics thread says when the store fails; the session's own next write
# meets the same failure and names it
MONITOR_STORE_ERRORS = ("Failed to get mlflow run", "Failed to log system metrics")


class OneLine(logging.Filter):
    """MLflow's own log lines, one line each: a store error it logs with its traceback before
    raising it again is dropped (the CLI names it, in one line), as is the system-metrics
    thread's report of the same failure; any other multi-line warning (a retry) is folded
    onto one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name == "mlflow.store.db.utils":
            return False
        if record.name.startswith("mlflow.system_metrics") and str(record.msg).startswith(MONITOR_STORE_ERRORS):
            return False
        text = record.getMessage()
        if record.exc_info or "\n" in text:
            folded = " ".join(text.split())
            record.msg, record.args = folded[:400] + (" ..." if len(folded) > 400 else ""), ()
            record.exc_info = record.exc_text = None
        return True


def one_line_logs() -> None:
    """Put ``OneLine`` on MLflow's log handlers (after MLflow is imported; idempotent)."""
    for handler in logging.getLogger("mlflow").handlers:
        if not any(isinstance(f, OneLine) for f in handler.filters):
            handler.addFilter(OneLine())
