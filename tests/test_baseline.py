"""The baseline file cannot lie, and updates run together keep each other's entries.

Through the CLI: a baseline holding a number that means nothing (NaN, Infinity, a 1e308
tolerance, a negative one), a key twice, a 5,000-digit integer or nesting too deep for the
parser is refused with exit 2, its path and the reason, before any store is touched. In
process: ``update`` re-reads the file under its lock, keeps the old file's mode and owner, and
writes through a symlink. Nothing here runs a session."""
import json
import os
import threading
from pathlib import Path

import pytest

from benchmarks import baseline as baseline_file, update_rule
from benchmarks.config import UsageError
from tests.helpers import run_cli

COMMITTED = Path(baseline_file.BASELINE)
ACC_KEY = "hw1-q3/fashion-mnist/numpy-batch/float32/b256"
SPEED_KEY = "speed/hw1-q4/fashion-mnist/numba-sample/float32/b1"
HOLE = "@@hole@@"


def committed() -> dict:
    return json.loads(COMMITTED.read_text())


def with_raw(path: tuple, raw: str) -> str:
    """The committed baseline's text with the value at ``path`` replaced by the JSON text ``raw``."""
    data = committed()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = HOLE
    return json.dumps(data, indent=2).replace(f'"{HOLE}"', raw)


BAD = {
    "NaN tolerance": (with_raw(("cells", ACC_KEY, "accuracy", "tolerance"), "NaN"), "NaN is not a number"),
    "Infinity in a loss curve": (with_raw(("cells", ACC_KEY, "loss", "expected"), "[Infinity, 0.5]"),
                                 "Infinity is not a number"),
    "an overflowing number": (with_raw(("cells", ACC_KEY, "loss", "tolerance"), "[1e999, 0.1]"),
                              "the number 1e999 is out of range"),
    "1e308 tolerance": (with_raw(("cells", ACC_KEY, "accuracy", "tolerance"), "1e308"),
                        "accuracy tolerance is 1e+308, not a number in (0, 0.5]"),
    "1e308 parity bound": (with_raw(("cells", ACC_KEY, "parity", "bound"), "1e308"),
                           "parity bound is 1e+308, not a number in (0, 0.1]"),
    "negative tolerance": (with_raw(("cells", ACC_KEY, "accuracy", "tolerance"), "-0.01"),
                           "accuracy tolerance is -0.01, not a number in (0, 0.5]"),
    "zero loss tolerance": (with_raw(("cells", ACC_KEY, "loss", "tolerance"), "[0.1, 0]"),
                            "loss tolerance[1] is 0, not a number in (0, 10]"),
    "accuracy above 1": (with_raw(("cells", ACC_KEY, "accuracy", "expected"), "1.5"),
                         "accuracy expected is 1.5, not a number in [0, 1]"),
    "NaN speed sample": (with_raw(("cells", SPEED_KEY, "speed", "samples"), "[1, 2, NaN, 4, 5]"),
                         "NaN is not a number"),
    "ratio outside its band": (with_raw(("cells", SPEED_KEY, "speed", "ratio"), "100"),
                               "low <= ratio <= high"),
    "a machine that is no text": (with_raw(("cells", SPEED_KEY, "speed", "machine"), "42"),
                                  "speed machine must be a printable text of 1 to 200 characters"),
    "a machine with a control character": (with_raw(("cells", SPEED_KEY, "speed", "machine"), '"lab\\u001b[2J"'),
                                           "speed machine must be a printable text"),
    "an unknown field": (with_raw(("cells", SPEED_KEY, "speed", "host"), '"x"'),
                         "speed needs band, ratio, samples, may have machine (and nothing else)"),
    "duplicate key": (with_raw(("cells", ACC_KEY, "parity"), '{"bound": 1e-3, "bound": 1e300}'),
                      "the key 'bound' appears twice in one object"),
    "duplicate entry": (with_raw(("about",), '"x", "cells": {}'), "the key 'cells' appears twice"),
    "huge integer": (with_raw(("cells", ACC_KEY, "accuracy", "seeds"), "[" + "9" * 5000 + "]"),
                     "an integer with 5000 digits"),
    "deep nesting": (with_raw(("options",), "[" * 100_000 + "]" * 100_000), "nested deeper than the JSON parser"),
    "not UTF-8": ('{"cells": {}, "about": "\xff"}'.encode("latin-1"), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.integration
def test_a_baseline_that_would_lie_is_refused_through_the_cli(tmp_path, case):
    text, reason = BAD[case]
    path = tmp_path / "baseline.json"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    store = tmp_path / "store"
    proc = run_cli("regress", "--run-id", "0" * 32, "--baseline", str(path), "--speed", "fail",
                   "--tracking-uri", f"sqlite:///{store / 'mlflow.db'}")
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert f"{path}: " in proc.stderr and reason in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "checks pass" not in proc.stdout
    assert not store.exists()                       # refused before any store is touched


def test_the_committed_baseline_holds_only_sane_numbers():
    assert baseline_file.schema_problem(baseline_file.parse(COMMITTED.read_text())) is None


# ---- writing ---------------------------------------------------------------------------------
def entry(key: str, value: float) -> tuple[dict, list[str]]:
    """An update's result and its moved keys: one new accuracy entry."""
    return {"about": "a", "options": {}, "cells": {key: {"accuracy": {"expected": value, "tolerance": 0.01,
                                                                      "seeds": [0]}}}}, [key]


def test_updates_run_together_keep_each_others_entries(tmp_path):
    """Both updates load the file before either writes (as two `regress --update` processes
    do at their start); each still keeps the other's entry, because each re-reads the file
    under the lock and applies only its own entries."""
    path = tmp_path / "baseline.json"
    path.write_text(baseline_file.dump({"cells": {"kept": {"parity": {"bound": 1e-9}}}}))
    loaded = threading.Barrier(2)
    results = []

    def one_update(key: str, value: float):
        stale = baseline_file.load_baseline(path)
        loaded.wait()
        new, moved = entry(key, value)
        new["cells"] = {**stale["cells"], **new["cells"]}
        results.append(baseline_file.update(path, lambda now: update_rule.merged(now, new, moved)))

    threads = [threading.Thread(target=one_update, args=(k, v)) for k, v in (("a", 0.5), ("b", 0.6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cells = baseline_file.load_baseline(path)["cells"]
    assert sorted(cells) == ["a", "b", "kept"]
    assert [changed for _, changed in results] == [True, True]
    assert (tmp_path / "baseline.json.lock").exists()


def test_an_update_keeps_the_mode_and_owner_and_writes_through_a_symlink(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    real = folder / "baseline.json"
    real.write_text(baseline_file.dump({"cells": {}}))
    os.chmod(real, 0o664)
    owner = (4321, 4322) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        os.chown(real, *owner)
    link = tmp_path / "baseline.json"
    link.symlink_to(real)
    new, moved = entry("a", 0.5)
    _, changed = baseline_file.update(link, lambda now: update_rule.merged(now, new, moved))
    assert changed and link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text())["cells"] == new["cells"]
    st = real.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o664, *owner)
    assert sorted(p.name for p in folder.iterdir()) == ["baseline.json", "baseline.json.lock"]
    _, changed = baseline_file.update(link, lambda now: update_rule.merged(now, new, moved))
    assert not changed                                   # the same entries again: nothing written


def test_a_new_baseline_gets_the_mode_the_umask_allows(tmp_path):
    old = os.umask(0o027)
    try:
        baseline_file.write_atomically(tmp_path / "new.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640


def test_an_update_never_writes_what_a_read_would_refuse(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(baseline_file.dump({"cells": {}}))
    before = path.read_bytes()
    with pytest.raises(UsageError, match="parity bound is 5, not a number in"):
        baseline_file.update(path, lambda now: {"cells": {"k": {"parity": {"bound": 5}}}})
    assert path.read_bytes() == before
