"""The decompressed copies of gzipped dataset files (benchmarks/unzipped.py): read instead of the
``.gz`` files once written, never trusted past a check, replaced when their source changes, and
never left half-written."""
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import datasets

SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def gz(tmp_path, monkeypatch, fashion):
    """The four real ``.gz`` files in a folder of their own, the copies kept under ``tmp_path/cache``;
    (that folder, where the copies go)."""
    folder = tmp_path / "fm"
    shutil.copytree(SYSTEM, folder)
    monkeypatch.setenv("BPB_DATA_DIR", str(tmp_path / "cache"))
    datasets._load_folder.cache_clear()
    yield folder, tmp_path / "cache" / "unzipped"
    datasets._load_folder.cache_clear()


def load(folder):
    datasets._load_folder.cache_clear()
    return datasets.load("fashion-mnist", folder)


def no_inflating(monkeypatch):
    def refuse(path):
        raise AssertionError(f"{path} inflated again")
    monkeypatch.setattr(datasets, "_read", refuse)


def test_the_second_load_reads_the_copies_and_gets_the_same_dataset(gz, fashion, monkeypatch):
    folder, copies = gz
    first = load(folder)
    assert sorted(p.name.split("-")[0] for p in copies.iterdir()) == ["t10k", "t10k", "train", "train"]
    no_inflating(monkeypatch)
    second = load(folder)
    assert first.digest == second.digest == fashion.digest
    assert np.array_equal(second.x_train, fashion.x_train) and np.array_equal(second.y_test, fashion.y_test)


@pytest.mark.parametrize("damage", ["a flipped byte", "content that hashes as recorded but fails the pinned SHA-256"])
def test_a_damaged_copy_is_never_read_as_data_and_is_written_again(gz, fashion, damage):
    import hashlib
    folder, copies = gz
    load(folder)
    [copy] = copies.glob("train-labels-*")
    stored = bytearray(copy.read_bytes())
    stored[100] = (stored[100] + 1) % 10                 # still a label, in the content part
    if damage != "a flipped byte":
        stored[:32] = hashlib.sha256(stored[32:]).digest()
    copy.write_bytes(bytes(stored))
    again = load(folder)
    assert again.digest == fashion.digest and np.array_equal(again.y_train, fashion.y_train)
    written = copy.read_bytes()                          # the source's content again, with its digest
    assert written[32:] == gzip.decompress((SYSTEM / "train-labels-idx1-ubyte.gz").read_bytes())
    assert written[:32] == hashlib.sha256(written[32:]).digest()


def test_a_source_that_changes_is_inflated_again_and_its_old_copy_removed(gz, monkeypatch):
    folder, copies = gz
    load(folder)
    [old] = copies.glob("t10k-labels-*")
    source = folder / "t10k-labels-idx1-ubyte.gz"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    inflated = []
    real = datasets._read
    monkeypatch.setattr(datasets, "_read", lambda path: inflated.append(path.name) or real(path))
    load(folder)
    assert inflated == ["t10k-labels-idx1-ubyte.gz"]
    [new] = copies.glob("t10k-labels-*")
    assert new != old and not old.exists()


def test_a_full_cache_costs_only_time_and_leaves_no_partial_copy(gz, fashion, full_disk, monkeypatch):
    folder, _ = gz
    monkeypatch.setenv("BPB_DATA_DIR", str(full_disk))       # 128 kB: the labels fit, the images do not
    assert load(folder).digest == fashion.digest
    kept = sorted(p.name.split("-idx")[0] for p in (full_disk / "unzipped").iterdir())
    assert kept == ["t10k-labels", "train-labels"], kept      # no temporary file, no partial image copy
    assert load(folder).digest == fashion.digest
