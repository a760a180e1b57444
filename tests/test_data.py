from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import urllib.error

import numpy as np
import pytest
import torch

from hwnas_darts.config import DataConfig, SyntheticConfig
from hwnas_darts.data import HwnasDataModule, ImageBatchDataset, dataset_info, load_arrays, read_idx
from hwnas_darts.errors import DataError


def write_idx(path, arr: np.ndarray, gz: bool = True):
    codes = {np.dtype(np.uint8): 0x08}
    header = struct.pack(">HBB", 0, codes[arr.dtype], arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    raw = header + arr.tobytes()
    with (gzip.open if gz else open)(path, "wb") as fh:
        fh.write(raw)


def make_fashion_dir(root, n_train=60, n_test=20):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (n_train, 28, 28), dtype=np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train).astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (n_test, 28, 28), dtype=np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test).astype(np.uint8))
    return root


def test_read_idx_round_trip_and_corruption(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    write_idx(tmp_path / "raw", arr, gz=False)
    assert np.array_equal(read_idx(tmp_path / "raw"), arr)
    # truncated data
    raw = (tmp_path / "raw").read_bytes()
    (tmp_path / "trunc").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="corrupted"):
        read_idx(tmp_path / "trunc")
    # a broken gzip stream
    gz = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "b.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="truncated or corrupted"):
        read_idx(tmp_path / "b.gz")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_fashion_from_directory_and_missing_message(tmp_path):
    root = make_fashion_dir(tmp_path / "fm")
    arr = load_arrays(DataConfig(dataset="fashion_mnist", root=str(root), download=False))
    assert arr.train_x.shape == (60, 1, 28, 28) and arr.test_x.shape == (20, 1, 28, 28)
    assert arr.info.num_classes == 10 and len(arr.mean) == 1
    with pytest.raises(DataError) as exc:
        load_arrays(DataConfig(dataset="fashion_mnist", root=str(tmp_path / "empty"), download=False))
    msg = str(exc.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "data.root" in msg and str(tmp_path / "empty") in msg


def test_download_failure_is_clear(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(DataError, match="(?s)could not download.*Without network access"):
        load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path / "c10"), download=True))
    with pytest.raises(DataError, match="download failed"):
        load_arrays(DataConfig(dataset="fashion_mnist", root=str(tmp_path / "fm2"), download=True))


def test_cifar10_from_local_archive(tmp_path):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = pickle.dumps({b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    arr = load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))
    assert arr.train_x.shape == (20, 3, 32, 32) and arr.test_x.shape == (4, 3, 32, 32)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a valid CIFAR-10 batch"):
        load_arrays(DataConfig(dataset="cifar10", root=str(tmp_path), download=False))


def _png(path, value, size=(10, 12), mode="RGB"):
    from PIL import Image

    Image.new(mode, size, value).save(path)


def test_imagefolder(tmp_path):
    for cls, val in (("cat", (200, 10, 10)), ("dog", (10, 200, 10))):
        (tmp_path / cls).mkdir()
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", val)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=8, test_fraction=0.2)
    arr = load_arrays(cfg)
    assert arr.train_x.shape[1:] == (3, 8, 8) and len(arr.train_x) + len(arr.test_x) == 10
    assert dataset_info(cfg).num_classes == 2 and dataset_info(cfg).class_names == ("cat", "dog")


def test_imagefolder_refusals(tmp_path):
    (tmp_path / "only").mkdir()
    _png(tmp_path / "only" / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match="at least 2"):
        load_arrays(DataConfig(dataset="imagefolder", root=str(tmp_path)))
    (tmp_path / "other").mkdir()
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_arrays(DataConfig(dataset="imagefolder", root=str(empty)))
    (tmp_path / "other" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read the image"):
        load_arrays(DataConfig(dataset="imagefolder", root=str(tmp_path)))


def test_digits_and_synthetic():
    arr = load_arrays(DataConfig(dataset="digits"))
    assert arr.train_x.shape[1:] == (1, 8, 8) and arr.info.num_classes == 10
    assert len(arr.train_x) + len(arr.test_x) == 1797
    syn = load_arrays(DataConfig(dataset="synthetic", synthetic=SyntheticConfig(num_train=40, num_test=8, size=12)))
    assert syn.train_x.shape == (40, 1, 12, 12) and syn.train_x.dtype == torch.uint8


def test_split_is_seeded_disjoint_and_capped():
    cfg = DataConfig(dataset="synthetic", synthetic=SyntheticConfig(num_train=200, num_test=20), val_fraction=0.25,
                     search_subset=100)
    a = HwnasDataModule(cfg, seed=0)
    a.setup()
    b = HwnasDataModule(cfg, seed=0)
    b.setup()
    c = HwnasDataModule(cfg, seed=1)
    c.setup()
    assert len(a.val_idx) == 25 and len(a.train_idx) == 75
    assert not set(a.val_idx.tolist()) & set(a.train_idx.tolist())
    assert torch.equal(a.val_idx, b.val_idx) and not torch.equal(a.val_idx, c.val_idx)
    assert len(a.retrain_idx) == 200  # retraining uses all the training data
    batch, _, _ = next(iter(a.train_dataloader()))  # CombinedLoader yields (batch, index, loader index)
    assert set(batch) == {"train", "val"} and batch["train"][0].shape == (cfg.batch_size, 1, 16, 16)
    assert len(batch["val"][1]) == 25  # a split smaller than a batch still yields it


def test_augmentation_is_a_function_of_the_batch():
    x = torch.randint(0, 255, (10, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(10)
    ds = ImageBatchDataset(x, y, [0.5], [0.25], augment=True, flip=True, seed=3)
    a, _ = ds.__getitems__([1, 2, 3])
    b, _ = ds.__getitems__([1, 2, 3])
    assert torch.equal(a, b)
    plain = ImageBatchDataset(x, y, [0.5], [0.25])
    xx, yy = plain.__getitems__([4])
    assert torch.allclose(xx, (x[4:5].float() / 255 - 0.5) / 0.25) and yy.tolist() == [4]


def test_random_erasing_replaces_one_bounded_rectangle_per_hit_image():
    from hwnas_darts.data import random_erase

    x = torch.full((400, 1, 20, 20), 7.0)  # 7 never comes out of the noise at these counts
    out = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    changed = (out != 7.0).flatten(1)
    hit = changed.any(1)
    assert 0.4 < hit.float().mean() < 0.6  # p = 0.5
    area = changed[hit].sum(1).float() / 400
    assert area.min() >= 1 / 400 and area.max() <= 0.40  # 2-33 % of the area (rounding of the sides)
    for img in (out[hit][:20] != 7.0)[:, 0]:  # a rectangle: the changed rows x changed cols, filled
        rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
        assert img[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert img.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    same = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    assert torch.equal(random_erase(x, 0.0, torch.Generator().manual_seed(0)), x)
    # only the augmented (training) datasets erase
    u8 = torch.randint(0, 255, (8, 1, 8, 8), dtype=torch.uint8)
    ds = ImageBatchDataset(u8, torch.arange(8), [0.5], [0.25], augment=False, erase=1.0)
    xx, _ = ds.__getitems__(list(range(8)))
    assert torch.allclose(xx, (u8.float() / 255 - 0.5) / 0.25)


def test_retrain_holdout_is_kept_out_of_the_retraining():
    cfg = DataConfig(dataset="synthetic", synthetic=SyntheticConfig(num_train=200, num_test=20))
    dm = HwnasDataModule(cfg, seed=0, mode="retrain", holdout=30)
    dm.setup()
    held, trained = set(dm.holdout_idx.tolist()), set(dm.retrain_idx.tolist())
    assert len(held) == 30 and len(trained) == 170 and not held & trained
    assert len(dm.holdout_dataloader().dataset) == 30 and not dm.holdout_dataloader().dataset.augment
    with pytest.raises(DataError, match="retrain.holdout=200 keeps every one"):
        HwnasDataModule(cfg, seed=0, mode="retrain", holdout=200).setup()


@pytest.mark.parametrize("data_augment", [True, False])
def test_the_retraining_has_its_own_augmentation_switch(data_augment):
    """``retrain.augment`` decides the retraining batches' augmentation whatever ``data.augment`` (the
    search's) says; None follows ``data.augment``; the search's datasets never see it."""
    from hwnas_darts.config import RetrainConfig

    cfg = DataConfig(dataset="synthetic", augment=data_augment, synthetic=SyntheticConfig(num_train=200, num_test=20))
    for setting, want in ((None, data_augment), (True, True), (False, False)):
        dm = HwnasDataModule(cfg, seed=0, mode="retrain", augment=setting)
        dm.setup()
        ds = dm.retrain_dataset()
        assert ds.augment is want
        x0 = ds.__getitems__(list(range(16)))[0]
        x1 = ImageBatchDataset(ds.x, ds.y, *dm.normalization, augment=False).__getitems__(list(range(16)))[0]
        assert torch.equal(x0, x1) is (not want)  # augmented batches differ from the plain ones
        assert not dm.test_dataset().augment
    search = HwnasDataModule(cfg, seed=0, mode="search", augment=False)
    search.setup()
    assert search.weight_dataset().augment is data_augment
    # "flip": every retraining image is the plain one or its mirror image, both occur, none is shifted
    # (the synthetic set is not flipped, so its dataset's switches are checked and a flipped one is built alike)
    dm = HwnasDataModule(cfg, seed=0, mode="retrain", augment="flip")
    dm.setup()
    ds = dm.retrain_dataset()
    assert ds.augment and not ds.crop and dm.retrain_dataset().flip is dm.info.flip
    assert HwnasDataModule(cfg, seed=0, mode="retrain", augment=True).retrain_crop
    ds = ImageBatchDataset(ds.x, ds.y, *dm.normalization, augment=True, flip=True, crop=False)
    x0 = ds.__getitems__(list(range(64)))[0]
    x1 = ImageBatchDataset(ds.x, ds.y, *dm.normalization, augment=False).__getitems__(list(range(64)))[0]
    same = [bool(torch.equal(a, b)) for a, b in zip(x0, x1)]
    mirrored = [bool(torch.equal(a, b.flip(-1))) for a, b in zip(x0, x1)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored) and not all(mirrored)
    with pytest.raises(ValueError, match="augment must be"):
        HwnasDataModule(cfg, seed=0, mode="retrain", augment="crop")
    with pytest.raises(ValueError, match="retrain.random_erasing=0.2 erases"):
        RetrainConfig(augment=False, random_erasing=0.2)
