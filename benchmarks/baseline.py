"""The baseline file (``benchmarks/baseline.json``): read and checked against its schema,
written with sorted keys and replaced atomically. Judging it is ``benchmarks/regress.py``."""
from __future__ import annotations

import json
import math
import os
import tempfile
from numbers import Real
from pathlib import Path

from benchmarks.config import UsageError

BASELINE = Path(__file__).with_name("baseline.json")


def load_baseline(path: Path, *, missing_ok: bool = False) -> dict:
    """The baseline, checked against its schema; UsageError (exit 2) naming what is wrong."""
    if not path.exists():
        if missing_ok:
            return {"cells": {}}
        raise UsageError(f"baseline {path} does not exist: a gate without a baseline judges nothing. "
                         "Restore it from git, pass --baseline, or create it with --update")
    try:
        baseline = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); restore it from git or rebuild it with --update") from None
    except OSError as exc:
        raise UsageError(f"cannot read baseline {path}: {exc.strerror}") from None
    problem = schema_problem(baseline)
    if problem:
        raise UsageError(f"{path}: not a baseline file: {problem}; restore it from git or rebuild it with --update")
    return baseline


def _numbers(x, n=None) -> bool:
    return isinstance(x, list) and (n is None or len(x) == n) and all(
        isinstance(v, Real) and not isinstance(v, bool) for v in x)


def schema_problem(b) -> str | None:
    """What is wrong with a parsed baseline, or None."""
    if not isinstance(b, dict) or not isinstance(b.get("cells"), dict):
        return 'expected an object with a "cells" object'
    num = lambda v: isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    for key, e in b["cells"].items():
        if not isinstance(e, dict) or not e or set(e) - {"accuracy", "loss", "parity", "speed"}:
            return f"entry {key!r}: expected some of accuracy, loss, parity, speed"
        a, p, s, lo = e.get("accuracy"), e.get("parity"), e.get("speed"), e.get("loss")
        if lo is not None and not (isinstance(lo, dict) and _numbers(lo.get("expected")) and lo["expected"]
                                   and _numbers(lo.get("tolerance"), len(lo["expected"]))
                                   and all(t > 0 for t in lo["tolerance"]) and isinstance(lo.get("seeds"), list)):
            return f"entry {key!r}: loss needs expected and tolerance (equal-length lists, tolerance > 0) and seeds"
        if a is not None and not (isinstance(a, dict) and num(a.get("expected")) and num(a.get("tolerance"))
                                  and isinstance(a.get("seeds"), list) and a["seeds"]
                                  and all(isinstance(v, int) for v in a["seeds"])):
            return f"entry {key!r}: accuracy needs expected, tolerance (numbers) and seeds (integers)"
        if p is not None and not (isinstance(p, dict) and num(p.get("bound"))):
            return f"entry {key!r}: parity needs a numeric bound"
        if s is not None and not (isinstance(s, dict) and num(s.get("ratio")) and _numbers(s.get("band"), 2)
                                  and _numbers(s.get("samples")) and len(s["samples"]) >= 3):
            return f"entry {key!r}: speed needs ratio, band [low, high] and at least 3 samples"
    return None


def dump(baseline: dict) -> str:
    return json.dumps(baseline, indent=2, sort_keys=True) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """A temporary file in the same folder, flushed, then renamed over ``path``: a full disk or
    a crash leaves the old file as it was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
