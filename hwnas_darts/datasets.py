"""Image sources, plain torch + numpy (no torchvision): Fashion-MNIST (IDX files: the Debian
package ``dataset-fashion-mnist``, a directory, or the official download), CIFAR-10 (the official
python archive or its extracted folder, or the download), an ImageFolder-style directory of the
user's images (or LitData shards of one: :mod:`hwnas_darts.shards`), scikit-learn's digits, and a
synthetic set for tests. Each loads into :class:`ImageArrays`: uint8 tensors in memory, or for an
image folder uint8 rows on disk (decoded once into the image cache and read by rows:
:mod:`hwnas_darts.imagecache`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import DataConfig
from .errors import DataError
from .imagecache import DiskImages, cached_folder, folder_layout
from .shards import load_split, read_meta
from .io import atomic_path, cache_dir

__all__ = ["DatasetInfo", "ImageArrays", "dataset_info", "load_arrays", "read_idx", "resize_images", "channel_stats",
           "take", "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES"]

_logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


@dataclass(frozen=True)
class DatasetInfo:
    """What the network needs to know about a dataset before loading it."""

    name: str
    channels: int
    size: int
    num_classes: int
    class_names: tuple[str, ...] = ()
    flip: bool = False


@dataclass
class ImageArrays:
    """A loaded dataset: uint8 images ``[N, C, H, W]`` and int64 labels, train and test."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self):
        if not self.mean:
            self.mean, self.std = channel_stats(self.train_x)


def channel_stats(x: "torch.Tensor | DiskImages", chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images scaled to [0, 1], in chunks (an
    in-memory tensor or a disk-backed :class:`~hwnas_darts.imagecache.DiskImages` alike)."""
    chunks = x.chunks(chunk) if isinstance(x, DiskImages) else torch.split(x, chunk)
    n, s, sq = 0, 0.0, 0.0
    for c in chunks:
        f = c.double().div_(255)
        s = s + f.sum(dim=(0, 2, 3))
        sq = sq + (f * f).sum(dim=(0, 2, 3))
        n += f.shape[0] * f.shape[2] * f.shape[3]
    mean = s / n
    var = (sq / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))
    return tuple(float(v) for v in mean), tuple(max(float(v), 1e-3) for v in var.sqrt())


def take(x: "torch.Tensor | DiskImages", idx: torch.Tensor) -> "torch.Tensor | DiskImages":
    """Rows ``idx`` of images: a copy of an in-memory tensor, a lazy view of disk-backed images."""
    return x.subset(idx) if isinstance(x, DiskImages) else x[idx]


# --------------------------------------------------------------------------------------------
# IDX (MNIST-family) files
# --------------------------------------------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped); raise DataError if it is truncated or corrupted."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read the IDX file ({exc}); it is truncated or corrupted - "
                        "delete it and get it again") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX file is corrupted: header says {dims} ({expected} bytes of data), "
                        f"file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def _download(url: str, dest: Path, md5: str | None = None) -> Path:
    _logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=20) as resp, atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                digest = hashlib.md5()
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
            if md5 and digest.hexdigest() != md5:
                raise DataError(f"download of {url} is corrupted (md5 {digest.hexdigest()}, expected {md5})")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(f"could not download {url}: {getattr(exc, 'reason', exc)}") from exc
    return dest


def _load_fashion_mnist(cfg: DataConfig) -> ImageArrays:
    roots = [Path(cfg.root)] if cfg.root else [Path(d) for d in FASHION_MNIST_DIRS] + [cache_dir("data") / "fashion-mnist"]
    root = None
    for cand in roots:
        if all(_find_idx(cand, s) for s in FASHION_MNIST_FILES.values()):
            root = cand
            break
    if root is None and cfg.download:
        target = Path(cfg.root) if cfg.root else cache_dir("data") / "fashion-mnist"
        try:
            for stem in FASHION_MNIST_FILES.values():
                if not _find_idx(target, stem):
                    _download(FASHION_MNIST_URL + stem + ".gz", target / (stem + ".gz"))
            root = target
        except DataError as exc:
            raise DataError(_fashion_missing(roots) + f"\n  The download failed too: {exc}") from exc
    if root is None:
        raise DataError(_fashion_missing(roots))
    arr = {k: read_idx(_find_idx(root, s)) for k, s in FASHION_MNIST_FILES.items()}
    for split in ("train", "test"):
        x, y = arr[f"{split}_images"], arr[f"{split}_labels"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"Fashion-MNIST {split} files in {root} have unexpected shapes {x.shape} / {y.shape}")
        if y.max() > 9:
            raise DataError(f"Fashion-MNIST {split} labels in {root} are out of range (max {y.max()})")
    info = DatasetInfo("fashion_mnist", 1, 28, 10, FASHION_MNIST_CLASSES, flip=True)
    return ImageArrays(
        info,
        torch.from_numpy(arr["train_images"].copy()).unsqueeze(1),
        torch.from_numpy(arr["train_labels"].astype(np.int64)),
        torch.from_numpy(arr["test_images"].copy()).unsqueeze(1),
        torch.from_numpy(arr["test_labels"].astype(np.int64)),
    )


def _fashion_missing(roots: Sequence[Path]) -> str:
    return ("Fashion-MNIST not found. Looked for the four IDX files (train-images-idx3-ubyte.gz, ...) in: "
            + ", ".join(str(r) for r in roots)
            + ".\n  Get it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the files "
              "in a directory and pass data.root=DIR, or allow the download (data.download=true) on a machine "
              "with network access.")


def _load_cifar10(cfg: DataConfig) -> ImageArrays:
    root = Path(cfg.root) if cfg.root else cache_dir("data") / "cifar10"
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    archive = root / "cifar-10-python.tar.gz"
    if not (folder / "data_batch_1").is_file():
        if not archive.is_file():
            if not cfg.download:
                raise DataError(f"CIFAR-10 not found in {root} (neither cifar-10-batches-py/ nor "
                                f"cifar-10-python.tar.gz); put the official python archive there or set data.download=true")
            try:
                _download(CIFAR10_URL, archive, CIFAR10_MD5)
            except DataError as exc:
                raise DataError(f"CIFAR-10 not found in {root} and {exc}.\n  Without network access, copy "
                                f"cifar-10-python.tar.gz (from {CIFAR10_URL}) into {root}, or pass data.root=DIR.") from exc
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("cifar-10-batches-py/")]
                tar.extractall(root, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive}: cannot extract the CIFAR-10 archive ({exc}); it is corrupted - delete it and get it again") from exc
        folder = root / "cifar-10-batches-py"

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        try:
            with open(path, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], dtype=np.int64)
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError) as exc:
            raise DataError(f"{path}: not a valid CIFAR-10 batch file ({exc})") from exc
        if len(x) != len(y):
            raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
        return x, y

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    tx, ty = batch("test_batch")
    info = DatasetInfo("cifar10", 3, 32, 10, CIFAR10_CLASSES, flip=True)
    return ImageArrays(
        info,
        torch.from_numpy(np.concatenate([p[0] for p in parts])),
        torch.from_numpy(np.concatenate([p[1] for p in parts])),
        torch.from_numpy(tx),
        torch.from_numpy(ty),
    )


def _split_test(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int):
    g = torch.Generator().manual_seed(10_000 + seed)
    perm = torch.randperm(len(x), generator=g)
    n_test = max(1, int(round(fraction * len(x))))
    te, tr = perm[:n_test], perm[n_test:]
    return take(x, tr), y[tr], take(x, te), y[te]


def _load_digits(cfg: DataConfig, seed: int) -> ImageArrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    tr_x, tr_y, te_x, te_y = _split_test(x, y, cfg.test_fraction, 0)  # fixed test split, whatever the seed
    info = DatasetInfo("digits", 1, 8, 10, tuple(str(i) for i in range(10)), flip=False)
    return ImageArrays(info, tr_x, tr_y, te_x, te_y)


def _synthetic_info(cfg: DataConfig) -> DatasetInfo:
    s = cfg.synthetic
    return DatasetInfo("synthetic", s.channels, s.size, s.num_classes, tuple(f"class{i}" for i in range(s.num_classes)))


def _load_synthetic(cfg: DataConfig) -> ImageArrays:
    s = cfg.synthetic
    g = torch.Generator().manual_seed(1234)
    protos = torch.rand(s.num_classes, s.channels, s.size, s.size, generator=g)
    protos = F.avg_pool2d(protos, 3, 1, 1)  # smooth patterns

    def make(n: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        y = torch.randint(0, s.num_classes, (n,), generator=gen)
        x = protos[y] + s.noise * torch.randn(n, s.channels, s.size, s.size, generator=gen) * 0.3
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    tx, ty = make(s.num_train, 1)
    vx, vy = make(s.num_test, 2)
    return ImageArrays(_synthetic_info(cfg), tx, ty, vx, vy)


def _imagefolder_layout(cfg: DataConfig) -> tuple[Path, Path | None, list[str]]:
    if cfg.root is None:
        raise DataError("the imagefolder dataset needs data.root=DIR")
    return folder_layout(Path(cfg.root))


def _load_imagefolder(cfg: DataConfig, seed: int) -> ImageArrays:
    """The folder's images decoded once into the image cache (:mod:`hwnas_darts.imagecache`) and read
    from there by rows: later stages and runs reuse the cache, and memory stays bounded."""
    train, test, classes = _imagefolder_layout(cfg)
    channels = cfg.channels or 3
    size = cfg.image_size or 32
    workers = cfg.num_workers or None
    tr = cached_folder(train, classes, size, channels, workers)
    info = DatasetInfo("imagefolder", channels, size, len(classes), tuple(classes), flip=True)
    if test is not None:
        te = cached_folder(test, classes, size, channels, workers)
        return ImageArrays(info, tr.x, tr.y, te.x, te.y, tr.mean, tr.std)
    x, y, tx, ty = _split_test(tr.x, tr.y, cfg.test_fraction, 0)
    return ImageArrays(info, x, y, tx, ty, *_split_stats(tr.path, x))


def _load_litdata(cfg: DataConfig) -> ImageArrays:
    """LitData shards (:mod:`hwnas_darts.shards`), streamed once per machine into the row cache."""
    meta = _litdata_meta(cfg)
    size, channels = int(meta["size"]), int(meta["channels"])
    info = DatasetInfo("litdata", channels, size, len(meta["classes"]), tuple(meta["classes"]), flip=True)
    tr = load_split(cfg.root, "train", meta)
    if "test" in meta["splits"]:
        te = load_split(cfg.root, "test", meta)
        return ImageArrays(info, tr.x, tr.y, te.x, te.y, tr.mean, tr.std)
    x, y, tx, ty = _split_test(tr.x, tr.y, cfg.test_fraction, 0)
    return ImageArrays(info, x, y, tx, ty, *_split_stats(tr.path, x))


def _litdata_meta(cfg: DataConfig) -> dict:
    if cfg.root is None:
        raise DataError("the litdata dataset needs data.root=DIR, a shard directory written by "
                        "python -m hwnas_darts.shards IMAGE_FOLDER DIR --image-size N")
    meta = read_meta(cfg.root)
    if cfg.image_size and cfg.image_size != meta["size"]:
        raise DataError(f"data.image_size={cfg.image_size}, but the shards at {cfg.root} hold {meta['size']}px images; "
                        f"leave data.image_size unset or write the shards at that size (--image-size {cfg.image_size})")
    if cfg.channels and cfg.channels != meta["channels"]:
        raise DataError(f"data.channels={cfg.channels}, but the shards at {cfg.root} hold {meta['channels']}-channel "
                        f"images; leave data.channels unset or write the shards with --channels {cfg.channels}")
    return meta


def _split_stats(cache: Path, x: DiskImages) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the training rows of a folder split into train and test, computed once and kept
    beside the cache (keyed by the rows)."""
    key = hashlib.sha1(np.ascontiguousarray(x.rows).tobytes()).hexdigest()[:16]
    path = cache / f"stats-{key}.json"
    try:
        d = json.loads(path.read_text())
        return tuple(d["mean"]), tuple(d["std"])
    except (OSError, ValueError, KeyError):
        pass
    mean, std = channel_stats(x)
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"mean": mean, "std": std}))
    except OSError as exc:  # a read-only cache still works, it recomputes next time
        _logger.debug("could not keep the split's statistics at %s: %s", path, exc)
    return mean, std


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Shape and classes of the configured dataset without loading it (image size override applied)."""
    if cfg.dataset == "fashion_mnist":
        info = DatasetInfo("fashion_mnist", 1, 28, 10, FASHION_MNIST_CLASSES, flip=True)
    elif cfg.dataset == "cifar10":
        info = DatasetInfo("cifar10", 3, 32, 10, CIFAR10_CLASSES, flip=True)
    elif cfg.dataset == "digits":
        info = DatasetInfo("digits", 1, 8, 10, tuple(str(i) for i in range(10)))
    elif cfg.dataset == "synthetic":
        info = _synthetic_info(cfg)
    elif cfg.dataset == "litdata":
        meta = _litdata_meta(cfg)
        info = DatasetInfo("litdata", int(meta["channels"]), int(meta["size"]), len(meta["classes"]),
                           tuple(meta["classes"]), flip=True)
    elif cfg.dataset == "imagefolder":
        _, _, classes = _imagefolder_layout(cfg)
        info = DatasetInfo("imagefolder", cfg.channels or 3, cfg.image_size or 32, len(classes), tuple(classes), flip=True)
    else:
        raise DataError(f"unknown dataset {cfg.dataset!r}")
    if cfg.image_size and cfg.image_size != info.size:
        info = DatasetInfo(info.name, info.channels, cfg.image_size, info.num_classes, info.class_names, info.flip)
    return info


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 images ``[N, C, H, W]`` to ``size x size`` (bilinear, antialiased), in chunks."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = []
    for chunk in torch.split(x, 4096):
        y = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_arrays(cfg: DataConfig, seed: int = 0) -> ImageArrays:
    """Load the configured dataset into memory (uint8), resized to ``cfg.image_size`` if set."""
    if cfg.dataset == "fashion_mnist":
        arr = _load_fashion_mnist(cfg)
    elif cfg.dataset == "cifar10":
        arr = _load_cifar10(cfg)
    elif cfg.dataset == "digits":
        arr = _load_digits(cfg, seed)
    elif cfg.dataset == "synthetic":
        arr = _load_synthetic(cfg)
    elif cfg.dataset == "imagefolder":
        arr = _load_imagefolder(cfg, seed)
    elif cfg.dataset == "litdata":
        arr = _load_litdata(cfg)
    else:
        raise DataError(f"unknown dataset {cfg.dataset!r}")
    if cfg.image_size and cfg.image_size != arr.info.size:
        info = dataset_info(cfg)
        arr = ImageArrays(info, resize_images(arr.train_x, cfg.image_size), arr.train_y,
                          resize_images(arr.test_x, cfg.image_size), arr.test_y)
    return arr
