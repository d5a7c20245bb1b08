"""The baseline file (``benchmarks/baseline.json``): read strictly and checked against its
schema and sane ranges, written with sorted keys, and updated under a lock. Judging it is
``benchmarks/regress.py``.

A baseline that cannot lie: every number is finite and in a sane range, tolerances and bounds
are positive, a key appears once per object, and anything else (NaN, Infinity, a 5,000-digit
integer, nesting deeper than the parser follows) is refused with the path and the reason.

Writing: ``update`` takes a lock beside the file (through a symlink, beside its target),
re-reads it under the lock and applies its change to what is there now, so two updates run
together each keep their entries. The new text goes to a temporary file in the same folder
that is renamed over the old one: a full disk or a crash leaves the old file as it was. The
old file's mode (and, where the writer may set it, its owner) is kept, and a symlink is
written through: its target changes, the link stays a link.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import stat
from collections.abc import Callable
from numbers import Real
from pathlib import Path

from benchmarks.config import UsageError

BASELINE = Path(__file__).with_name("baseline.json")
LOCK_TIMEOUT = 120.0      # seconds an update waits for another one to finish writing
MAX_DIGITS = 20           # the longest integer a baseline holds (a seed is at most 10 digits)

# The fields of each check and their ranges: (low, high, low excluded). Cross-entropy over 10
# classes starts at ln 10 = 2.3, so a loss of 100 or a tolerance of 10 says nothing; float32's
# parity contract is 1e-3, and a bound above 0.1 would pass a wrong gradient.
FIELDS = {
    "accuracy": {"expected": (0.0, 1.0, False), "tolerance": (0.0, 0.5, True), "seeds": None},
    "loss": {"expected": (0.0, 100.0, False), "tolerance": (0.0, 10.0, True), "seeds": None},
    "parity": {"bound": (0.0, 0.1, True)},
    "speed": {"ratio": (0.0, 1e6, True), "band": (0.0, 1e6, True), "samples": (0.0, 1e6, True)},
}
LISTS = {("loss", "expected"), ("loss", "tolerance"), ("speed", "band"), ("speed", "samples")}
OPTIONAL = {"speed": ("machine",)}   # text fields a check may hold: the machine label that measured it


class _Refused(ValueError):
    """A JSON text that parses, but holds something no baseline may hold."""


def _no_constant(name: str):
    raise _Refused(f"{name} is not a number a baseline may hold")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"an integer with {len(text.lstrip('-'))} digits (at most {MAX_DIGITS})")
    return int(text)


def _object(pairs: list) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _Refused(f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def parse(text: str) -> dict:
    """JSON, strictly: no NaN or Infinity, no duplicate key, no huge integer. ValueError with
    the reason (json's own errors say where)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_float, parse_int=_int,
                          object_pairs_hook=_object)
    except RecursionError:
        raise ValueError("nested deeper than the JSON parser follows") from None


def load_baseline(path: Path, *, missing_ok: bool = False) -> dict:
    """The baseline, checked against its schema; UsageError (exit 2) naming what is wrong."""
    if not path.exists():
        if missing_ok:
            return {"cells": {}}
        raise UsageError(f"baseline {path} does not exist: a gate without a baseline judges nothing. "
                         "Restore it from git, pass --baseline, or create it with --update")
    fix = "restore it from git or rebuild it with --update"
    try:
        baseline = parse(path.read_bytes().decode("utf-8"))
    except _Refused as exc:
        raise UsageError(f"{path}: not a baseline file: {exc}; {fix}") from None
    except (ValueError, UnicodeDecodeError) as exc:      # JSONDecodeError is a ValueError
        raise UsageError(f"{path}: not valid JSON ({exc}); {fix}") from None
    except OSError as exc:
        raise UsageError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    problem = schema_problem(baseline)
    if problem:
        raise UsageError(f"{path}: not a baseline file: {problem}; {fix}")
    return baseline


def _in_range(x, low: float, high: float, open_low: bool) -> bool:
    return (isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x)
            and (x > low if open_low else x >= low) and x <= high)


def _interval(low, high, open_low) -> str:
    return f"{'(' if open_low else '['}{low:g}, {high:g}]"


def _check_problem(check: str, c) -> str | None:
    """What is wrong with one check of an entry (``c`` is ``entry[check]``), or None."""
    fields, optional = FIELDS[check], OPTIONAL.get(check, ())
    if not isinstance(c, dict) or set(c) - set(optional) != set(fields):
        return (f"{check} needs {', '.join(sorted(fields))}" + (f", may have {', '.join(optional)}" if optional else "")
                + " (and nothing else)")
    for name in optional:
        if name in c and not (isinstance(c[name], str) and 0 < len(c[name]) <= 200 and c[name].isprintable()):
            return f"{check} {name} must be a printable text of 1 to 200 characters"
    for name, limits in fields.items():
        if limits is None:                          # seeds: a non-empty list of integers
            seeds = c[name]
            if not (isinstance(seeds, list) and seeds and all(
                    isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 32 for s in seeds)):
                return f"{check} seeds must be a non-empty list of integers in [0, 2**32)"
            continue
        values = c[name] if (check, name) in LISTS else [c[name]]
        if not isinstance(values, list) or not values:
            return f"{check} {name} must be a non-empty list of numbers"
        for i, v in enumerate(values):
            if not _in_range(v, *limits):
                where = f"{name}[{i}]" if (check, name) in LISTS else name
                return f"{check} {where} is {v!r}, not a number in {_interval(*limits)}"
    if check == "loss" and len(c["expected"]) != len(c["tolerance"]):
        return "loss needs expected and tolerance of equal length"
    if check == "speed" and not (len(c["band"]) == 2 and c["band"][0] <= c["ratio"] <= c["band"][1]):
        return "speed needs a band [low, high] with low <= ratio <= high"
    return None


def schema_problem(b) -> str | None:
    """What is wrong with a parsed baseline, or None."""
    if not isinstance(b, dict) or not isinstance(b.get("cells"), dict):
        return 'expected an object with a "cells" object'
    for key, e in b["cells"].items():
        if not isinstance(e, dict) or not e or set(e) - set(FIELDS):
            return f"entry {key!r}: expected some of accuracy, loss, parity, speed"
        for check in sorted(e):
            problem = _check_problem(check, e[check])
            if problem:
                return f"entry {key!r}: {problem}"
    return None


def dump(baseline: dict) -> str:
    return json.dumps(baseline, indent=2, sort_keys=True, allow_nan=False) + "\n"


def update(path: Path, change: Callable[[dict], dict]) -> tuple[dict, bool]:
    """Rewrite the baseline at ``path`` as ``change(what it holds now)``, under the lock beside
    the file. Returns (the baseline written, whether the file changed)."""
    from filelock import FileLock, Timeout
    target = Path(os.path.realpath(path))
    lock = f"{target}.lock"
    try:
        with FileLock(lock, timeout=LOCK_TIMEOUT):
            new = change(load_baseline(path, missing_ok=True))
            problem = schema_problem(new)
            if problem:                 # what this file refuses to read, it never writes
                raise UsageError(f"not writing {path}: the update would make it fail its schema: {problem}")
            text = dump(new)
            try:
                same = target.read_bytes() == text.encode()
            except FileNotFoundError:
                same = False
            if not same:
                write_atomically(target, text)
    except Timeout:
        raise TimeoutError(f"another update has held the baseline's lock {lock} for over {LOCK_TIMEOUT:.0f} s; "
                           "try again when it has finished") from None
    return new, not same


def write_atomically(path: Path, text: str) -> None:
    """A temporary file in the same folder (through a symlink, its target's), flushed, given the
    old file's mode and owner, then renamed over it: a full disk or a crash leaves the old file
    as it was. A new file gets the mode the umask allows, like any file the user creates."""
    path = Path(os.path.realpath(path))
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if old is not None:
                if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                    try:
                        os.fchown(f.fileno(), old.st_uid, old.st_gid)
                    except PermissionError:       # only root may give a file away
                        pass
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
