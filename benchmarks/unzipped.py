"""Decompressed copies of gzipped dataset files, kept in the dataset cache (``$BPB_DATA_DIR``, else
the user's cache: benchmarks/datasets.py). Debian's ``dataset-fashion-mnist`` ships ``.gz`` files:
a load that inflates them (and writes the copies) takes 0.33 s here, one that reads the copies
0.06 s, and every session and each of its spawned workers loads the dataset (docs/performance.md).

A copy is named after its source's path and identity (device, inode, size, modification and
change times), so a source that changes in any way is inflated again. A copy starts with the
SHA-256 of its content, so a copy damaged on disk is never read as data. The caller hashes what
it reads once, for that check and for the checks that the source's content must pass
(benchmarks/datasets.py: magic number, dimensions, length and, where pinned, the file's SHA-256),
and inflates the source when a copy fails one. Writing a copy is best effort: a read-only or full
cache costs only the time a copy would have saved, and never leaves a partial copy (each is
written beside its name and renamed into place)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from tracking.cache import put

DIGEST = 32             # a copy: the SHA-256 of the content, then the content


def _names(source: Path) -> tuple[str, str]:
    """(the prefix every copy of ``source`` has, the name of the copy of its present version)."""
    st = source.stat()
    where = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    state = hashlib.sha256(f"{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}".encode())
    prefix = f"{source.stem}-{where}-"
    return prefix, prefix + state.hexdigest()[:12]


def cached(source: Path, root: Path) -> tuple[memoryview, bytes] | None:
    """(content, the SHA-256 recorded with it) of ``source``'s copy under ``root``, or None where
    there is none or it cannot be read. The caller hashes the content to check it."""
    try:
        stored = (root / "unzipped" / _names(source)[1]).read_bytes()
    except OSError:
        return None
    return memoryview(stored)[DIGEST:], stored[:DIGEST]


def keep(source: Path, data: bytes, sha: bytes, root: Path) -> None:
    """Store ``data`` (whose SHA-256 is ``sha``) under ``root`` as ``source``'s copy, replacing the
    copies of its earlier versions; a cache that cannot be written is not an error (tracking/cache.py ``put``)."""
    try:
        prefix, name = _names(source)
    except OSError:
        return

    def write(part: Path) -> None:
        with open(part, "wb") as f:
            f.write(sha)
            f.write(data)
    where = root / "unzipped"
    if put(where / name, write):
        for old in where.glob(prefix + "*"):
            if old.name != name:
                try:
                    old.unlink(missing_ok=True)
                except OSError:
                    pass


def forget(source: Path, root: Path) -> None:
    """Remove ``source``'s copy under ``root`` (it failed a check)."""
    try:
        (root / "unzipped" / _names(source)[1]).unlink(missing_ok=True)
    except OSError:
        pass
