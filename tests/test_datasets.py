"""Datasets: the real Fashion-MNIST files, every kind of damage, and the download path
(torchvision's downloader against a fake mirror on 127.0.0.1)."""
import gzip
import hashlib
import http.server
import os
import shutil
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from benchmarks import datasets

SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def test_real_fashion_mnist_loads_and_verifies(fashion):
    assert fashion.x_train.shape == (60000, 784) and fashion.x_train.dtype == np.uint8
    assert fashion.x_test.shape == (10000, 784)
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    assert fashion.classes[9] == "Ankle boot"
    x = fashion.features("test", "float32", 100)
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    assert len(fashion.digest) == 16


@pytest.fixture(scope="module")
def plain():
    """The four real files' bytes, decompressed once for the module."""
    return {src.stem: gzip.decompress(src.read_bytes()) for src in SYSTEM.glob("*.gz")}


@pytest.fixture
def damaged(tmp_path, fashion, plain):
    """The four real files, plain (decompressed), in a folder the test may damage."""
    datasets._load_folder.cache_clear()
    folder = tmp_path / "fm"
    folder.mkdir()
    for name, data in plain.items():
        (folder / name).write_bytes(data)
    yield folder
    datasets._load_folder.cache_clear()


def test_plain_copy_in_data_dir_loads(damaged, fashion):
    data = datasets.load("fashion-mnist", damaged)
    assert data.digest == fashion.digest and data.source == str(damaged.resolve())


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-100], "bytes, expected exactly 10008"),
    (lambda b: b[:5], "shorter than the 8-byte IDX header"),
    (lambda b: b"\x00\x00\x08\x03" + b[4:], "magic number 2051, expected 2049"),
    (lambda b: b[:4] + (9999).to_bytes(4, "big") + b[8:], "dimensions [9999], expected [10000]"),
    (lambda b: b[:8] + bytes([(b[8] + 1) % 10]) + b[9:], "SHA-256"),
])
def test_damaged_file_is_named_with_what_is_wrong(damaged, damage, message):
    target = damaged / "t10k-labels-idx1-ubyte"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(datasets.DataError) as err:
        datasets.load("fashion-mnist", damaged)
    text = str(err.value)
    assert str(target) in text and message in text and "corrupt" in text


def test_broken_gzip_is_named(damaged):
    (damaged / "t10k-labels-idx1-ubyte").unlink()
    bad = damaged / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(datasets.DataError, match="t10k-labels-idx1-ubyte.gz: cannot be read"):
        datasets.load("fashion-mnist", damaged)


def test_corrupt_deflate_stream_is_named_as_damaged(damaged):
    """A valid gzip header over a broken deflate stream raises zlib.error inside gzip."""
    import gzip
    target = damaged / "t10k-labels-idx1-ubyte"
    packed = bytearray(gzip.compress(target.read_bytes()))
    packed[20:40] = bytes(range(20))
    target.unlink()
    bad = damaged / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bytes(packed))
    with pytest.raises(datasets.DataError, match="ubyte.gz: cannot be read .* damaged"):
        datasets.load("fashion-mnist", damaged)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: chmod cannot make one unreadable")
@pytest.mark.parametrize("what", ["file", "folder"])
def test_unreadable_data_says_permission_denied_not_damaged(damaged, what):
    target = damaged / "t10k-labels-idx1-ubyte" if what == "file" else damaged
    target.chmod(0)
    try:
        with pytest.raises(datasets.DataError, match="permission denied") as err:
            datasets.load("fashion-mnist", damaged)
        assert "damaged" not in str(err.value)
    finally:
        target.chmod(0o755)


def test_missing_dataset_names_every_fix(tmp_path):
    with pytest.raises(datasets.DataError) as err:
        datasets.load("fashion-mnist", tmp_path)
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text
    assert "--data-dir" in text and "--download" in text and str(tmp_path) in text


def test_lookup_prefers_the_user_cache(tmp_path, monkeypatch, damaged):
    monkeypatch.setenv("BPB_DATA_DIR", str(tmp_path / "cache"))
    shutil.copytree(damaged, tmp_path / "cache" / "fashion-mnist")
    assert datasets.load("fashion-mnist").source == str((tmp_path / "cache" / "fashion-mnist").resolve())
    monkeypatch.setenv("BPB_DATA_DIR", str(tmp_path / "empty"))
    assert datasets.load("fashion-mnist").source == str(SYSTEM)


# ---- download through torchvision, from a fake mirror on loopback ---------------------------
def _fake_idx(magic: int, n: int, rng) -> bytes:
    if magic == 2051:
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 14, :] = rng.integers(0, 256, size=(n, 1), dtype=np.uint8)
        return b"".join(v.to_bytes(4, "big") for v in (magic, n, 28, 28)) + images.tobytes()
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return magic.to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes()


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """Serve fake MNIST .gz files on 127.0.0.1 and point torchvision's MNIST at them."""
    tvd = pytest.importorskip("torchvision.datasets")
    served = tmp_path / "mirror"
    served.mkdir()
    rng = np.random.default_rng(0)
    resources = []
    for fname, magic, n in datasets.FILES.values():
        blob = gzip.compress(_fake_idx(magic, n, rng), compresslevel=1)
        (served / f"{fname}.gz").write_bytes(blob)
        resources.append((f"{fname}.gz", hashlib.md5(blob).hexdigest()))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(tvd.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
    monkeypatch.setattr(tvd.MNIST, "resources", resources)
    monkeypatch.setenv("BPB_DATA_DIR", str(tmp_path / "cache"))
    datasets._load_folder.cache_clear()
    yield tvd.MNIST, served
    server.shutdown()
    datasets._load_folder.cache_clear()


@pytest.mark.integration
def test_download_through_torchvision_from_a_local_mirror(fake_mirror, tmp_path):
    with pytest.raises(datasets.DataError, match="--download"):
        datasets.load("mnist")                                  # nothing there, no download asked
    data = datasets.load("mnist", download_ok=True)
    assert data.x_train.shape == (60000, 784) and data.y_test.shape == (10000,)
    assert Path(data.source) == (tmp_path / "cache" / "mnist").resolve()
    assert (tmp_path / "cache" / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    datasets._load_folder.cache_clear()
    assert datasets.load("mnist").digest == data.digest         # second time: from the cache


@pytest.mark.integration
def test_download_checksum_mismatch_is_a_clear_error(fake_mirror, monkeypatch):
    mnist, _ = fake_mirror
    monkeypatch.setattr(mnist, "resources", [(f, "0" * 32) for f, _ in mnist.resources])
    with pytest.raises(datasets.DataError, match="downloading MNIST into .* failed"):
        datasets.load("mnist", download_ok=True)
