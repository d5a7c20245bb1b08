"""The argument types of ``python -m benchmarks``: each converts one option's text and, when
it cannot, names what it wants (argparse names the option)."""
from __future__ import annotations

import argparse
import datetime
import os
import re
from pathlib import Path

import impls


def _number(parse, ok, wanted: str):
    """An argparse type: ``parse`` the text, accept it when ``ok(value)``, else say what is wanted."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value
    convert.__name__ = wanted
    return convert


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
port = _number(int, lambda v: 1 <= v <= 65535, "a port number in [1, 65535]")
seed_int = _number(int, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2**32)")
positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
unit_interval = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
fraction = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")
iso_date = _number(datetime.date.fromisoformat, lambda v: True, "a date such as 2026-11-01")

# Upper bounds: a value past them is a typo or an attack on the machine, never a benchmark
# (docs/reliability.md, "Budgets"). Each metric row an epoch writes is kept forever.
MAX_EPOCHS = 1000
MAX_REPEATS = 1000
MAX_REPEAT_SECONDS = 60.0
MAX_CELL_BUDGET = 24 * 3600.0
THREADS_PER_CORE = 4
epoch_count = _number(int, lambda v: 1 <= v <= MAX_EPOCHS, f"an integer from 1 to {MAX_EPOCHS}")
repeat_count = _number(int, lambda v: 1 <= v <= MAX_REPEATS, f"an integer from 1 to {MAX_REPEATS}")
repeat_time = _number(float, lambda v: 0 < v <= MAX_REPEAT_SECONDS,
                      f"a positive number of seconds, at most {MAX_REPEAT_SECONDS:g}")
cell_seconds = _number(float, lambda v: 0 < v <= MAX_CELL_BUDGET,
                       f"a positive number of seconds, at most {MAX_CELL_BUDGET:g} (a day)")


def thread_count(text: str) -> int:
    """Threads: 1 to ``THREADS_PER_CORE`` times this machine's cores."""
    from benchmarks.threads import all_cores
    most = THREADS_PER_CORE * all_cores()
    return _number(int, lambda v: 1 <= v <= most,
                   f"an integer from 1 to {most} ({THREADS_PER_CORE} x this machine's {all_cores()} cores)")(text)


def _path_error(path: Path) -> str | None:
    """Why ``path`` can never be a file name here (a part or the whole too long), or None."""
    whole = Path(os.path.abspath(path))          # no system call that a long name would fail
    try:
        longest_part, longest_path = os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):
        return None                              # the usual checks then say what is wrong
    if any(len(os.fsencode(part)) > longest_part for part in whole.parts):
        return f"a part of it is longer than {longest_part} bytes"
    if len(os.fsencode(str(whole))) >= longest_path:
        return f"it is longer than {longest_path - 1} bytes"
    return None


def csv_of(item, choices=None):
    """A comma-separated list, each item converted by ``item`` (and one of ``choices``)."""
    def parse(text: str) -> tuple:
        values = tuple(dict.fromkeys(item(v.strip()) for v in text.split(",") if v.strip()))   # no repeats
        bad = [v for v in values if choices is not None and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(map(str, choices))}"
                                             f"; got {text!r}" if choices else f"expected a list; got {text!r}")
        return values
    return parse


def impl_list(text: str) -> list[str]:
    if text.strip() == "all":
        return impls.names()
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in impls.names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown implementation {', '.join(map(repr, unknown)) or repr(text)}; "
            f"valid names: {', '.join(impls.names())} (or 'all')")
    return names


def output_file(text: str) -> str:
    path = Path(text).expanduser()
    if (why := _path_error(path)):
        raise argparse.ArgumentTypeError(f"{text[:60]!r}{'...' if len(text) > 60 else ''}: {why}")
    if not path.resolve().parent.is_dir() or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: its folder must exist and it must not be a folder")
    return str(path)


def output_dir(text: str) -> str:
    path = Path(text).expanduser()
    if (why := _path_error(path)):
        raise argparse.ArgumentTypeError(f"{text[:60]!r}{'...' if len(text) > 60 else ''}: {why}")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return str(path)


def machine_label(text: str) -> str:
    """A session's machine label: letters, digits and ``. _ - @ + :``, at most 100."""
    if not re.fullmatch(r"[\w.@+:-]{1,100}", text):
        raise argparse.ArgumentTypeError(f"must be 1-100 letters, digits or . _ - @ + : (no spaces), got {text!r}")
    return text
