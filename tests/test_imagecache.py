"""Image folders decoded once into the on-disk cache: reuse, invalidation, equality with a direct
decode, row reads and views, batches through the data module, and the errors."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
import torch

from hwnas_darts.config import DataConfig
from hwnas_darts.errors import DataError
from hwnas_darts.imagecache import DiskImages, cached_folder, list_folder


def _folder(root, n_per_class=6, size=(10, 12)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for ci, cls in enumerate(("ant", "bee", "cow")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    return ["ant", "bee", "cow"]


def _direct(root, rels, size, channels):
    """The images decoded here, one by one, as the cache should hold them."""
    from PIL import Image

    out = []
    for rel in rels:
        with Image.open(root / rel) as im:
            a = np.asarray(im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR), np.uint8)
        out.append(a.reshape(size, size, channels).transpose(2, 0, 1))
    return np.stack(out)


def test_cache_matches_a_direct_decode_and_is_reused_until_a_file_changes(tmp_path):
    folder, cache = tmp_path / "imgs", tmp_path / "cache"
    classes = _folder(folder)
    first = cached_folder(folder, classes, 8, 3, root=cache)
    assert first.built and first.x.shape == (18, 3, 8, 8) and first.y.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    rels, _ = list_folder(folder, classes)
    direct = _direct(folder, rels, 8, 3)
    assert np.array_equal(first.x[:].numpy(), direct)
    f = direct.astype(np.float64) / 255
    assert first.mean == pytest.approx(tuple(f.mean(axis=(0, 2, 3))), abs=1e-9)
    again = cached_folder(folder, classes, 8, 3, root=cache)
    assert not again.built and again.path == first.path  # opened, not decoded
    gray = cached_folder(folder, classes, 8, 1, root=cache)
    assert gray.built and gray.path != first.path and np.array_equal(gray.x[:].numpy(), _direct(folder, rels, 8, 1))
    # a changed image makes a new cache
    time.sleep(0.01)
    from PIL import Image

    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(folder / "bee" / "2.png")
    os.utime(folder / "bee" / "2.png", ns=(time.time_ns(), time.time_ns()))
    changed = cached_folder(folder, classes, 8, 3, root=cache)
    assert changed.built and changed.path != first.path
    assert int(changed.x[8].sum()) == 0 and int(first.x[8].sum()) > 0  # the old cache still describes the old folder


def test_disk_images_index_like_a_tensor_and_pickle_to_workers(tmp_path):
    data = torch.randint(0, 256, (20, 2, 3, 3), dtype=torch.uint8)
    path = tmp_path / "x.u8"
    path.write_bytes(data.numpy().tobytes())
    x = DiskImages(path, data.shape)
    assert len(x) == 20 and x.shape == (20, 2, 3, 3)
    idx = torch.tensor([7, 3, 3, 19, 0, 8])  # unsorted, repeated, runs of consecutive rows
    assert torch.equal(x[idx], data[idx]) and torch.equal(x[5], data[5]) and torch.equal(x[-1], data[-1])
    assert torch.equal(x[2:9:3], data[2:9:3]) and x[[]].shape == (0, 2, 3, 3)
    view = x.subset(torch.tensor([10, 11, 12, 13])).subset([3, 0])
    assert len(view) == 2 and torch.equal(view[:], data[[13, 10]])
    clone = pickle.loads(pickle.dumps(view))  # what a DataLoader worker or a DDP rank receives
    assert torch.equal(clone[:], data[[13, 10]])
    with pytest.raises(IndexError, match="out of range"):
        x[torch.tensor([20])]
    chunks = list(x.chunks(8))
    assert [len(c) for c in chunks] == [8, 8, 4] and torch.equal(torch.cat(chunks), data)


def test_truncated_cache_and_corrupt_image_are_named(tmp_path):
    path = tmp_path / "x.u8"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match=r"x\.u8: the image cache is truncated or foreign"):
        DiskImages(path, (2, 1, 2, 2))
    folder = tmp_path / "imgs"
    classes = _folder(folder, n_per_class=2)
    (folder / "cow" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError) as err:
        cached_folder(folder, classes, 8, 3, root=tmp_path / "cache")
    assert "broken.jpg: cannot read the image" in str(err.value) and "\n" not in str(err.value)
    assert not any((tmp_path / "cache").glob("*/meta.json"))  # nothing half-built is left as a cache


def test_parallel_decode_equals_the_single_process_one(tmp_path):
    folder = tmp_path / "imgs"
    classes = _folder(folder, n_per_class=100, size=(6, 6))  # 300 images: two chunks, two worker processes
    one = cached_folder(folder, classes, 6, 3, workers=1, root=tmp_path / "c1")
    two = cached_folder(folder, classes, 6, 3, workers=2, root=tmp_path / "c2")
    assert torch.equal(one.x[:], two.x[:]) and torch.equal(one.y, two.y)


def test_the_data_module_reads_a_folder_through_the_cache_without_copying_it(tmp_path):
    from hwnas_darts.data import HwnasDataModule

    folder = tmp_path / "imgs"
    _folder(folder, n_per_class=10)
    cfg = DataConfig(dataset="imagefolder", root=str(folder), image_size=8, test_fraction=0.2, batch_size=4,
                     search_subset=None, val_fraction=0.25)
    dm = HwnasDataModule(cfg, seed=3, mode="search")
    dm.setup()
    a = dm.arrays
    assert isinstance(a.train_x, DiskImages) and isinstance(a.test_x, DiskImages)
    assert len(a.train_x) + len(a.test_x) == 30 and len(a.train_x) == 24
    ds = dm.weight_dataset(augment=False)
    assert isinstance(ds.x, DiskImages) and len(ds) == len(dm.train_idx)  # a view, not a copy
    xb, yb = ds.__getitems__([0, 2])
    raw = a.train_x[dm.train_idx[[0, 2]]].float() / 255
    mean, std = torch.tensor(a.mean).view(1, -1, 1, 1), torch.tensor(a.std).view(1, -1, 1, 1)
    assert torch.allclose(xb, (raw - mean) / std) and torch.equal(yb, a.train_y[dm.train_idx[[0, 2]]])
    # the same seed, the same batches; a second data module opens the same cache
    dm2 = HwnasDataModule(cfg, seed=3, mode="search")
    dm2.setup()
    b1 = next(iter(dm.train_dataloader()))[0]
    b2 = next(iter(dm2.train_dataloader()))[0]
    assert torch.equal(b1["train"][0], b2["train"][0]) and torch.equal(b1["val"][1], b2["val"][1])
    resized = dm._ds(a.test_x, a.test_y, False)
    assert resized.x is a.test_x
    big = type(ds)(a.test_x, a.test_y, a.mean, a.std, size=12)  # a resolution change is applied per batch
    assert big.__getitems__([0])[0].shape == (1, 3, 12, 12)


def test_data_path_report_warns_when_loading_takes_most_of_the_stage(caplog):
    from hwnas_darts.data import data_path_report, data_rate

    batches = [(torch.zeros(8, 1, 4, 4), torch.zeros(8)) for _ in range(30)]
    rate = data_rate(batches, 10)
    assert rate > 0
    fast = data_path_report(batches, images=10, seconds=1e6, stage="retraining")  # training far slower than the data
    assert fast["data_share"] < 0.01 and "loading took" not in caplog.text
    slow = data_path_report(batches, images=int(rate * 100), seconds=1.0, stage="retraining")
    assert slow["data_share"] > 0.5 and "retraining: the data path delivers" in caplog.text
    pairs = [{"train": (torch.zeros(4, 1), torch.zeros(4)), "val": (torch.zeros(4, 1), torch.zeros(4))}] * 5
    assert data_rate(pairs, 3) > 0  # a search step's pair counts both halves


def test_data_path_report_handles_a_loader_of_one_batch_or_none():
    from hwnas_darts.data import data_path_report, data_rate

    one = [(torch.zeros(24, 1, 4, 4), torch.zeros(24))]  # a tiny image folder: one batch per epoch
    assert data_rate(one, 20) > 0
    assert data_path_report(one, images=24, seconds=1.0, stage="search")["data_share"] >= 0
    empty = data_path_report([], images=0, seconds=1.0, stage="search")
    assert empty["data_images_per_s"] == 0.0 and empty["data_share"] == 0.0


def test_make_imagefolder_writes_a_folder_the_pipeline_reads(tmp_path):
    import subprocess
    import sys

    from hwnas_darts.datasets import load_arrays

    from .conftest import ROOT

    out = tmp_path / "fj"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_imagefolder.py"), "--out", str(out), "--size", "16",
                           "--count", "120", "--test-count", "30", "--workers", "1"], capture_output=True, text=True,
                          timeout=300)
    if "Fashion-MNIST not found" in proc.stderr:
        pytest.skip("Fashion-MNIST files not installed (apt-get install dataset-fashion-mnist)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = list((out / "train").rglob("*.jpg"))
    assert len(files) == 120 and len(list((out / "test").rglob("*.jpg"))) == 30
    arr = load_arrays(DataConfig(dataset="imagefolder", root=str(out), image_size=16, channels=3))
    assert arr.train_x.shape == (120, 3, 16, 16) and arr.test_x.shape == (30, 3, 16, 16) and arr.info.num_classes == 10
    again = subprocess.run([sys.executable, str(ROOT / "tools" / "make_imagefolder.py"), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "not empty" in again.stderr  # an existing folder is never written over


def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    import hwnas_darts.imagecache as ic

    folder = tmp_path / "imgs"
    classes = _folder(folder, n_per_class=2)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ic, "_build", full)
    with pytest.raises(DataError, match="HWNAS_IMAGE_CACHE at a disk with room"):
        cached_folder(folder, classes, 8, 3, root=tmp_path / "cache")
