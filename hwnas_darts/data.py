"""Batches and the LightningDataModule over the images of :mod:`hwnas_darts.datasets`.

The user's training data is split at random (seeded) into a weight-training part and an
architecture-validation part; the official test split is used only for the final evaluation.
Images are kept as uint8 tensors in memory; batches are converted, augmented (random crop with
zero padding, horizontal flip where it makes sense, optionally random erasing) and normalised in
one vectorised step.
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ._pl import pl
from .config import DataConfig
from .datasets import DatasetInfo, ImageArrays, dataset_info, load_arrays, read_idx, resize_images, take  # noqa: F401
from .errors import DataError
from .imagecache import DiskImages

__all__ = ["ImageBatchDataset", "SeededSampler", "HwnasDataModule", "make_loader", "cycle_batches", "data_rate",
           "data_path_report",
           "DatasetInfo", "ImageArrays", "dataset_info", "load_arrays", "read_idx"]

_logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Batched dataset and sampler
# --------------------------------------------------------------------------------------------
class ImageBatchDataset(Dataset):
    """uint8 images + labels; batches are fetched, augmented and normalised in one step.

    ``__getitems__`` receives the whole index list of a batch (PyTorch's batched fetch), so
    conversion and augmentation are vectorised. Augmentation randomness is a function of the
    batch's indices, so a resumed run sees the same crops as an uninterrupted one.

    ``erase``: with this probability per image, a random rectangle (2-33 % of the area, aspect
    0.3-3.3) is replaced by standard-normal noise after normalisation (random erasing, Zhong et
    al. 2020); only where ``augment`` is on.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 augment: bool = False, flip: bool = False, seed: int = 0, size: int | None = None,
                 erase: float = 0.0, crop: bool = True):
        self.resize_to = None
        if size is not None and size != x.shape[-1]:
            if isinstance(x, DiskImages):  # disk-backed: each batch is resized as it is read
                self.resize_to = size
            else:
                x = resize_images(x, size)
        self.x, self.y = x, y
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment, self.flip, self.seed, self.erase, self.crop = augment, flip, seed, float(erase), crop
        self.pad = max(1, (self.resize_to or x.shape[-1]) // 8)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices: Sequence[int]):
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        raw = self.x[idx]
        if self.resize_to is not None:
            raw = resize_images(raw, self.resize_to)
        x = raw.float().div_(255.0)
        g = None
        if self.augment:
            g = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + hash(tuple(int(i) for i in indices[:16])) + len(indices)) & 0x7FFF_FFFF_FFFF_FFFF)
            x = self._augment(x, g)
        x = (x - self.mean) / self.std
        if g is not None and self.erase > 0:
            x = random_erase(x, self.erase, g)
        return x, self.y[idx]

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.crop:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (b,), generator=g)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=g)
            rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
            bi = torch.arange(b)[:, None, None, None]
            ci = torch.arange(c)[None, :, None, None]
            x = padded[bi, ci, rows, cols]
        if self.flip:
            flip = torch.rand(b, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


def random_erase(x: torch.Tensor, p: float, g: torch.Generator, area=(0.02, 0.33), ratio=(0.3, 3.3)) -> torch.Tensor:
    """Replace one random rectangle per image (with probability ``p``) by standard-normal noise."""
    b, c, h, w = x.shape
    hit = torch.rand(b, generator=g) < p
    frac = torch.empty(b).uniform_(*area, generator=g) * (h * w)
    aspect = torch.exp(torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g))
    eh = (frac * aspect).sqrt().round().clamp(1, h).long()
    ew = (frac / aspect).sqrt().round().clamp(1, w).long()
    y0 = (torch.rand(b, generator=g) * (h - eh + 1)).long()
    x0 = (torch.rand(b, generator=g) * (w - ew + 1)).long()
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    box = ((rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None]) & (cols >= x0[:, None, None])
           & (cols < (x0 + ew)[:, None, None]) & hit[:, None, None])
    noise = torch.randn(x.shape, generator=g)
    return torch.where(box[:, None], noise, x)


def collate_batch(batch):
    """Collate for :class:`ImageBatchDataset`: batches arrive already stacked."""
    if isinstance(batch, tuple) and len(batch) == 2 and torch.is_tensor(batch[0]):
        return batch
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.stack(ys)


class SeededSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch): resumable and reproducible."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def make_loader(ds: ImageBatchDataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A loader over ``ds`` with a (seed, epoch)-determined order; ``drop_last`` only applies when
    the dataset holds more than one batch (a tiny split must still yield its batch)."""
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=SeededSampler(len(ds), seed, shuffle),
        num_workers=num_workers,
        collate_fn=collate_batch,
        drop_last=drop_last and len(ds) > batch_size,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def cycle_batches(loader: Iterable, steps: int) -> Iterator:
    """``steps`` batches from ``loader``, starting it over whenever it runs out."""
    it = iter(loader)
    for _ in range(steps):
        try:
            yield next(it)
        except StopIteration:
            it = iter(loader)
            yield next(it)


# --------------------------------------------------------------------------------------------
# LightningDataModule
# --------------------------------------------------------------------------------------------
class HwnasDataModule(pl.LightningDataModule):
    """Splits, datasets and loaders for both stages.

    ``mode="search"``: ``train_dataloader`` yields ``{"train": batch, "val": batch}`` pairs
    (weight-training part and architecture-validation part of the user's training data).
    ``mode="retrain"``: ``train_dataloader`` yields batches of the whole training data (or of
    the weight-training part, with ``retrain.full_train=false``; or of all but ``holdout`` images,
    which ``holdout_dataloader`` scores after every epoch). ``test_dataloader`` is the
    official test split in both modes.
    """

    def __init__(self, cfg: DataConfig, seed: int = 0, mode: str = "search", full_train: bool = True,
                 image_size: int | None = None, holdout: int = 0, erase: float = 0.0, augment: bool | str | None = None):
        super().__init__()
        if mode not in ("search", "retrain"):
            raise ValueError(f"mode must be 'search' or 'retrain', got {mode!r}")
        self.cfg, self.seed, self.mode, self.full_train = cfg, seed, mode, full_train
        self.image_size, self.holdout, self.erase = image_size, int(holdout), float(erase)
        # the retraining's own augmentation switch (``retrain.augment``); None follows ``data.augment``;
        # "flip": flipped, not cropped
        if augment is not None and not isinstance(augment, bool) and augment != "flip":
            raise ValueError(f"augment must be true, false, 'flip' or None, got {augment!r}")
        self.retrain_augment = cfg.augment if augment is None else bool(augment)
        self.retrain_crop = augment != "flip"
        self.arrays: ImageArrays | None = None

    def prepare_data(self) -> None:
        # loading checks the files (and downloads where allowed); arrays are rebuilt per process in setup
        if self.arrays is None:
            self.arrays = load_arrays(self.cfg, self.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is None:
            self.arrays = load_arrays(self.cfg, self.seed)
        a = self.arrays
        n = len(a.train_y)
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(n, generator=g)
        if self.cfg.search_subset and self.cfg.search_subset < n:
            search_idx = perm[: self.cfg.search_subset]
        else:
            search_idx = perm
        n_val = max(1, int(round(self.cfg.val_fraction * len(search_idx))))
        self.val_idx = search_idx[:n_val]
        self.train_idx = search_idx[n_val:]
        if len(self.train_idx) < 1:
            raise DataError(f"the training data ({n} images) is too small to split with val_fraction={self.cfg.val_fraction}")
        self.retrain_idx = perm if self.full_train else perm[n_val:]
        self.holdout_idx = perm[:0]
        if self.holdout:
            if self.holdout >= n:
                raise DataError(f"retrain.holdout={self.holdout} keeps every one of the {n} training images out of "
                                "the retraining; use a smaller holdout (a few thousand images are plenty)")
            self.holdout_idx, self.retrain_idx = perm[: self.holdout], perm[self.holdout:]

    @property
    def info(self) -> DatasetInfo:
        if self.arrays is None:
            return dataset_info(self.cfg)
        return self.arrays.info

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        assert self.arrays is not None, "call setup() first"
        return self.arrays.mean, self.arrays.std

    def _ds(self, x, y, augment: bool, erase: float = 0.0, setting: bool | None = None,
            crop: bool = True) -> ImageBatchDataset:
        a = self.arrays
        on = self.cfg.augment if setting is None else setting
        return ImageBatchDataset(x, y, a.mean, a.std, augment=augment and on,
                                 flip=a.info.flip, seed=self.seed, size=self.image_size, erase=erase, crop=crop)

    def weight_dataset(self, augment: bool = True) -> ImageBatchDataset:
        a = self.arrays
        return self._ds(take(a.train_x, self.train_idx), a.train_y[self.train_idx], augment)

    def archval_dataset(self) -> ImageBatchDataset:
        a = self.arrays
        return self._ds(take(a.train_x, self.val_idx), a.train_y[self.val_idx], False)

    def retrain_dataset(self) -> ImageBatchDataset:
        a = self.arrays
        return self._ds(take(a.train_x, self.retrain_idx), a.train_y[self.retrain_idx], True, self.erase,
                        self.retrain_augment, crop=self.retrain_crop)

    def holdout_dataset(self) -> ImageBatchDataset:
        a = self.arrays
        return self._ds(take(a.train_x, self.holdout_idx), a.train_y[self.holdout_idx], False)

    def test_dataset(self) -> ImageBatchDataset:
        a = self.arrays
        return self._ds(a.test_x, a.test_y, False)

    def train_dataloader(self):
        bs, nw = self.cfg.batch_size, self.cfg.num_workers
        if self.mode == "search":
            from ._pl import CombinedLoader

            return CombinedLoader(
                {
                    "train": make_loader(self.weight_dataset(), bs, True, self.seed, nw, drop_last=True),
                    "val": make_loader(self._ds(take(self.arrays.train_x, self.val_idx), self.arrays.train_y[self.val_idx], True),
                                       bs, True, self.seed + 1, nw, drop_last=True),
                },
                mode="max_size_cycle",
            )
        return make_loader(self.retrain_dataset(), bs, True, self.seed, nw, drop_last=True)

    def archval_dataloader(self) -> DataLoader:
        return make_loader(self.archval_dataset(), self.cfg.eval_batch_size, False, self.seed)

    def holdout_dataloader(self) -> DataLoader:
        return make_loader(self.holdout_dataset(), self.cfg.eval_batch_size, False, self.seed)

    def test_dataloader(self) -> DataLoader:
        return make_loader(self.test_dataset(), self.cfg.eval_batch_size, False, self.seed)


def _images_in(batch) -> int:
    """Images in a batch: ``(x, y)``, or a search step's ``{"train": (x, y), "val": (x, y)}``."""
    if isinstance(batch, dict):
        return sum(_images_in(b) for b in batch.values())
    if isinstance(batch, (tuple, list)) and len(batch) == 3 and isinstance(batch[0], dict):  # CombinedLoader
        return _images_in(batch[0])
    return len(batch[0])


def data_rate(loader: Iterable, batches: int = 20) -> float:
    """Images per second ``loader`` delivers (reading, decoding, augmenting, normalising): its first
    ``batches`` batches after one untimed (the untimed one counts too when the loader has no other);
    0.0 for a loader without batches."""
    import time

    it = iter(loader)
    t_first = time.perf_counter()
    try:
        first = _images_in(next(it))
    except StopIteration:
        return 0.0
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            n += _images_in(next(it))
        except StopIteration:
            break
    if n == 0:  # a single batch: time it with its start-up
        n, t0 = first, t_first
    return n / max(time.perf_counter() - t0, 1e-9)


def data_path_report(loader: Iterable, images: int, seconds: float, stage: str, workers: int = 0,
                     batches: int = 20) -> dict[str, float]:
    """The data path's rate against what a stage consumed (``images`` in ``seconds``), with a warning when
    loading takes more than half of the stage's time (batches are built in the training process unless
    ``data.num_workers`` > 0, so its time adds to the step's). An empty loader reports a share of 0."""
    rate = data_rate(loader, batches)
    consumed = images / max(seconds, 1e-9)
    if rate <= 0.0:
        share = 0.0
    else:
        share = consumed / rate if workers == 0 else max(0.0, consumed / rate - 1.0)
    if share > 0.5:
        _logger.warning("%s: the data path delivers %.0f images/s and training consumed %.0f images/s: loading took "
                        "about %.0f%% of the stage. Set data.num_workers (worker processes build the batches in "
                        "parallel with training); an image folder is read from its decoded cache already.", stage, rate,
                        consumed, 100 * min(share, 1.0))
    return {"data_images_per_s": round(rate, 1), "consumed_images_per_s": round(consumed, 1),
            "data_share": round(share, 3)}


def batches_done(trainer) -> int:
    """Training batches a Lightning fit completed (a resumed fit counts the part before its interruption)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)
