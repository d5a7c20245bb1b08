"""The argument types of ``python -m benchmarks``: each converts one option's text and, when
it cannot, names what it wants (argparse names the option)."""
from __future__ import annotations

import argparse
import datetime
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
    if not path.resolve().parent.is_dir() or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: its folder must exist and it must not be a folder")
    return str(path)


def output_dir(text: str) -> str:
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return str(path)


def machine_label(text: str) -> str:
    """A session's machine label: letters, digits and ``. _ - @ + :``, at most 100."""
    if not re.fullmatch(r"[\w.@+:-]{1,100}", text):
        raise argparse.ArgumentTypeError(f"must be 1-100 letters, digits or . _ - @ + : (no spaces), got {text!r}")
    return text
