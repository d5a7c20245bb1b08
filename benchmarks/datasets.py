"""MNIST and Fashion-MNIST from their IDX files, found, verified and loaded.

Lookup order for a dataset: ``--data-dir`` if given (and only there); the user cache
(``$BPB_DATA_DIR``, else ``$XDG_CACHE_HOME/backprop-bench``, else ``~/.cache/backprop-bench``,
one folder per dataset); a system copy (Debian's ``dataset-fashion-mnist`` package); then,
only when asked with ``download=True``, torchvision's downloader into the user cache. Every file
is checked: magic number, dimensions, exact byte length and, where known, its SHA-256.
Files may be plain or gzipped; a gzipped file is inflated once, and its decompressed copy kept in
the cache and checked as the file is (benchmarks/unzipped.py). Nothing here runs at import time.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmarks import unzipped
from tracking.cache import user_cache

FILES = {  # role -> (IDX file name, magic number, samples)
    "train_images": ("train-images-idx3-ubyte", 2051, 60000),
    "train_labels": ("train-labels-idx1-ubyte", 2049, 60000),
    "test_images": ("t10k-images-idx3-ubyte", 2051, 10000),
    "test_labels": ("t10k-labels-idx1-ubyte", 2049, 10000),
}
ROWS = COLS = 28


class DataError(Exception):
    """A dataset that is missing, truncated or corrupt; the message says how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    torchvision_class: str
    classes: tuple[str, ...]
    sha256: dict[str, str] = field(default_factory=dict)   # decompressed file -> digest
    apt_package: str | None = None
    system_dirs: tuple[str, ...] = ()


DATASETS = {
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist", title="Fashion-MNIST", torchvision_class="FashionMNIST",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        apt_package="dataset-fashion-mnist",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
    # Digit MNIST: torchvision checks the MD5 of what it downloads; no digest is pinned here.
    "mnist": DatasetInfo(
        name="mnist", title="MNIST", torchvision_class="MNIST",
        classes=tuple(str(d) for d in range(10)),
    ),
}


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 ``(n, 784)``, labels as int64 ``(n,)``."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str            # the folder the files came from
    digest: str            # SHA-256 over the four decompressed files, for tracking
    _features: dict = field(default_factory=dict, compare=False, repr=False)

    def features(self, split: str, dtype: str, limit: int | None = None) -> np.ndarray:
        """Images of ``split`` ("train" or "test") scaled to [0, 1] in ``dtype``. Converted once
        per (split, dtype, limit) and shared: callers must not write into the array."""
        key = (split, np.dtype(dtype).name, limit)
        if key not in self._features:
            x = self.x_train if split == "train" else self.x_test
            x = x[:limit] if limit else x
            scaled = x.astype(dtype)
            scaled /= np.asarray(255, dtype=dtype)          # in place: one array of the dtype, not two
            self._features[key] = scaled
        return self._features[key]

    def labels(self, split: str, limit: int | None = None) -> np.ndarray:
        y = self.y_train if split == "train" else self.y_test
        return y[:limit] if limit else y


def cache_dir() -> Path:
    if os.environ.get("BPB_DATA_DIR"):
        return Path(os.environ["BPB_DATA_DIR"])
    return user_cache()


def _find_file(folder: Path, info: DatasetInfo, fname: str) -> Path | None:
    """The file in ``folder`` itself or in torchvision's ``<Class>/raw/`` layout, plain or .gz."""
    for sub in (folder, folder / info.torchvision_class / "raw"):
        for candidate in (sub / fname, sub / (fname + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _complete(folder: Path, info: DatasetInfo) -> bool:
    try:
        return all(_find_file(folder, info, fname) for fname, _, _ in FILES.values())
    except PermissionError:
        raise DataError(f"{folder}: permission denied, the folder cannot be read. Fix its permissions "
                        "(chmod), run as a user who can read it, or point --data-dir elsewhere.") from None


def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except PermissionError:
        raise DataError(f"{path}: permission denied, the file cannot be read. Fix its permissions "
                        "(chmod), run as a user who can read it, or point --data-dir elsewhere.") from None
    except (OSError, EOFError, zlib.error) as exc:   # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read ({exc}). The file is damaged: delete it and "
                        "install or download the dataset again.") from None


def _parse(path: Path, data: bytes, sha: bytes, info: DatasetInfo, fname: str, magic: int, n: int) -> np.ndarray:
    """The file's array, once ``data`` (its content, whose SHA-256 is ``sha``) passes every check."""
    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}. The file is truncated or corrupt: delete it and install "
                         f"or download {info.title} again.")
    header = 16 if magic == 2051 else 8
    if len(data) < header:
        raise bad(f"only {len(data)} bytes, shorter than the {header}-byte IDX header")
    got_magic = int.from_bytes(data[:4], "big")
    if got_magic != magic:
        raise bad(f"magic number {got_magic}, expected {magic}")
    dims = [int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range((header - 4) // 4)]
    want_dims = [n, ROWS, COLS] if magic == 2051 else [n]
    if dims != want_dims:
        raise bad(f"dimensions {dims}, expected {want_dims}")
    want_len = header + int(np.prod(want_dims))
    if len(data) != want_len:
        raise bad(f"{len(data)} bytes, expected exactly {want_len}")
    expected = info.sha256.get(fname)
    if expected:
        got = sha.hex()
        if got != expected:
            raise bad(f"SHA-256 {got}, expected {expected}")
    arr = np.frombuffer(data, dtype=np.uint8, offset=header)
    if magic == 2051:
        return arr.reshape(n, ROWS * COLS)
    if arr.max() >= len(info.classes):
        raise bad(f"label {arr.max()} out of range 0..{len(info.classes) - 1}")
    return arr.astype(np.int64)


def _copy_checked(path: Path, info: DatasetInfo, fname: str, magic: int, n: int):
    """(content, its SHA-256, array) of the decompressed copy of a gzipped ``path``
    (benchmarks/unzipped.py) where there is one, it is the content it was written with, and that
    content passes every check the file's own must pass; else None."""
    copy = unzipped.cached(path, cache_dir()) if path.suffix == ".gz" else None
    if copy is None:
        return None
    data, recorded = copy
    sha = hashlib.sha256(data).digest()
    if sha == recorded:
        try:
            return data, sha, _parse(path, data, sha, info, fname, magic, n)
        except DataError:
            pass
    unzipped.forget(path, cache_dir())
    return None


@lru_cache(maxsize=4)
def _load_folder(folder: str, name: str) -> Dataset:
    info = DATASETS[name]
    arrays, digest = {}, hashlib.sha256()
    for role, (fname, magic, n) in FILES.items():
        path = _find_file(Path(folder), info, fname)
        copy = _copy_checked(path, info, fname, magic, n)
        if copy is None:
            data = _read(path)
            sha = hashlib.sha256(data).digest()
            arrays[role] = _parse(path, data, sha, info, fname, magic, n)
            if path.suffix == ".gz":
                unzipped.keep(path, data, sha, cache_dir())
        else:
            data, sha, arrays[role] = copy
        digest.update(sha)
    return Dataset(name=name, x_train=arrays["train_images"], y_train=arrays["train_labels"],
                   x_test=arrays["test_images"], y_test=arrays["test_labels"], classes=info.classes,
                   source=folder, digest=digest.hexdigest()[:16])


def _missing_message(info: DatasetInfo, looked: list[Path], data_dir: str | None) -> str:
    where = "\n".join(f"  - {p}" for p in looked)
    fixes = []
    if info.apt_package:
        fixes.append(f"install the system copy: sudo apt-get install {info.apt_package}")
    fixes.append("point --data-dir at a folder holding " +
                 ", ".join(f for f, _, _ in FILES.values()) + " (plain or .gz)")
    fixes.append(f"download it with --download (needs network; torchvision saves it under {cache_dir() / info.name})")
    lines = "\n".join(f"  {k}. {fix}" for k, fix in enumerate(fixes, 1))
    scope = f"in --data-dir {data_dir}" if data_dir else "in any of these folders"
    return f"{info.title} was not found {scope}:\n{where}\nTo fix this, do one of:\n{lines}"


def download(name: str, root: Path) -> Path:
    """Download through torchvision (which checks its MD5s) into ``root``; returns the folder."""
    info = DATASETS[name]
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise DataError(f"downloading {info.title} needs torchvision, which does not import: {exc}") from None
    cls = getattr(tvd, info.torchvision_class)
    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError variants
        raise DataError(f"downloading {info.title} into {root} failed: {exc}\n"
                        "Without network access, install the system copy or use --data-dir.") from None
    return root


def load(name: str, data_dir: str | os.PathLike | None = None, *, download_ok: bool = False) -> Dataset:
    """Find, verify and load a dataset; raises DataError with every way to fix a problem."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    info = DATASETS[name]
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        candidates = [cache_dir() / name, *map(Path, info.system_dirs)]
    for folder in candidates:
        if _complete(folder, info):
            return _load_folder(str(folder.resolve()), name)
    if download_ok:
        folder = download(name, Path(data_dir) if data_dir is not None else cache_dir() / name)
        if _complete(folder, info):
            return _load_folder(str(folder.resolve()), name)
    raise DataError(_missing_message(info, candidates, str(data_dir) if data_dir is not None else None))
