"""Image folders decoded once, in parallel, into an on-disk uint8 cache read back row by row.

An image folder (one sub-directory of images per class) is listed and fingerprinted - the
relative path, size and modification time of every image - and its images are decoded, converted
and resized in worker processes straight into a raw ``uint8`` file ``[N, C, H, W]`` beside the
labels, in the user cache, keyed by (fingerprint, size, channels). Every later stage of the run and
every later run opens that cache instead of decoding again; a changed, added or removed image
changes the fingerprint, and a new cache is built (the old one is left for the folder it
describes). Memory stays bounded while building (each worker returns a chunk of images, written
at its place in the file) and while training: :class:`DiskImages` reads the rows a batch needs
with positioned reads (``os.pread``), so an epoch over the whole set does not grow the process's
resident memory by the file's size (the operating system's page cache holds it, shared by all).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import DataError
from .io import IMAGE_EXTENSIONS, cache_dir

__all__ = ["DiskImages", "FolderImages", "cached_folder", "open_cache", "commit_cache", "folder_layout", "list_folder",
           "folder_fingerprint", "CACHE_VERSION"]

_logger = logging.getLogger(__name__)

CACHE_VERSION = 1
_CHUNK = 256  # images a worker decodes per task


@dataclass(frozen=True)
class FolderImages:
    """A folder's images as a cache holds them: the rows, their labels, per-channel mean and std."""

    x: "DiskImages"
    y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    path: Path
    built: bool  # decoded in this call (False: an existing cache was opened)


class DiskImages:
    """A read-only ``uint8`` image array ``[N, C, H, W]`` in a raw file, read by rows on demand.

    Indexing with an int, a slice, or a sequence / tensor of row numbers returns a new tensor
    (``x[idx]``, as for an in-memory tensor); :meth:`subset` returns a lazy view of some rows.
    The file is opened per process on first use, so the object pickles to DataLoader workers and
    DDP ranks as a path.
    """

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], rows: np.ndarray | None = None):
        self.path = Path(path)
        self.file_shape = tuple(int(s) for s in shape)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._row_bytes = int(np.prod(self.file_shape[1:]))
        self._fd: int | None = None
        self._pid: int | None = None
        expected = self.file_shape[0] * self._row_bytes
        size = self.path.stat().st_size
        if size != expected:
            raise DataError(f"{self.path}: the image cache is truncated or foreign ({size} bytes, expected {expected} "
                            f"for {self.file_shape}); delete it and rerun, it is rebuilt from the folder")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.file_shape[1:])

    def __len__(self) -> int:
        return self.file_shape[0] if self.rows is None else len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "file_shape": self.file_shape, "rows": self.rows, "_row_bytes": self._row_bytes,
                "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a fresh descriptor in every process (fork, spawn)
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _file_rows(self, idx: Any) -> np.ndarray:
        n = len(self)
        if isinstance(idx, slice):
            sel = np.arange(n)[idx]
        elif isinstance(idx, (int, np.integer)):
            sel = np.asarray([int(idx)])
        else:
            sel = (idx.cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)).astype(np.int64).reshape(-1)
        if sel.size and (sel.min() < -n or sel.max() >= n):
            raise IndexError(f"row index out of range for {n} images")
        sel = np.where(sel < 0, sel + n, sel)
        return sel if self.rows is None else self.rows[sel]

    def subset(self, idx: Any) -> "DiskImages":
        """A lazy view of the given rows (nothing is read)."""
        return DiskImages(self.path, self.file_shape, self._file_rows(idx))

    def read(self, file_rows: np.ndarray) -> np.ndarray:
        """Rows of the file, in the given order: one positioned read per run of consecutive rows."""
        out = np.empty((len(file_rows), *self.file_shape[1:]), dtype=np.uint8)
        if not len(file_rows):
            return out
        order = np.argsort(file_rows, kind="stable")
        sorted_rows = file_rows[order]
        fd, rb = self._file(), self._row_bytes
        flat = out.reshape(len(file_rows), rb)
        start = 0
        while start < len(sorted_rows):  # runs of consecutive rows are read at once
            end = start + 1
            while end < len(sorted_rows) and sorted_rows[end] == sorted_rows[end - 1] + 1:
                end += 1
            first, count = int(sorted_rows[start]), end - start
            buf = os.pread(fd, count * rb, first * rb)
            if len(buf) != count * rb:
                raise DataError(f"{self.path}: short read at row {first}; the image cache is truncated - delete it")
            flat[order[start:end]] = np.frombuffer(buf, dtype=np.uint8).reshape(count, rb)
            start = end
        return out

    def __getitem__(self, idx: Any) -> torch.Tensor:
        t = torch.from_numpy(self.read(self._file_rows(idx)))
        return t[0] if isinstance(idx, (int, np.integer)) else t

    def chunks(self, size: int = 4096):
        """The rows in order, ``size`` at a time, as tensors."""
        for s in range(0, len(self), size):
            yield self[slice(s, min(s + size, len(self)))]


# --------------------------------------------------------------------------------------------
# Listing, fingerprint, decoding
# --------------------------------------------------------------------------------------------
def folder_layout(root: Path) -> tuple[Path, Path | None, list[str]]:
    """An image folder's training directory, its test directory (``train/`` beside ``test/`` or
    ``val/``; else None: the whole folder is the training data) and its class names (the training
    directory's sub-directories, sorted; at least two)."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    train, test = root, None
    for tname in ("test", "val"):
        if (root / "train").is_dir() and (root / tname).is_dir():
            train, test = root / "train", root / tname
            break
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"image folder {train} has {len(classes)} class sub-directories; it needs at least 2 "
                        "(one sub-directory of images per class)")
    return train, test, classes


def list_folder(folder: Path, classes: Sequence[str]) -> tuple[list[str], list[int]]:
    """Image files (relative to ``folder``, sorted per class) and their class indices."""
    files, labels = [], []
    for ci, cname in enumerate(classes):
        cdir = folder / cname
        if not cdir.is_dir():
            continue
        for path in sorted(cdir.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                files.append(str(path.relative_to(folder)))
                labels.append(ci)
    return files, labels


def folder_fingerprint(folder: Path, files: Sequence[str], size: int, channels: int) -> str:
    """Digest of what the cache depends on: every file's relative path, size and modification time,
    the image size and channels, and the cache format's version."""
    h = hashlib.sha1(f"v{CACHE_VERSION}:{size}:{channels}\n".encode())
    for rel in files:
        st = (folder / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode_chunk(task: tuple[str, list[str], int, int]) -> np.ndarray:
    """Decode, convert and resize a chunk of images (in a worker process)."""
    from PIL import Image, UnidentifiedImageError

    folder, rels, size, channels = task
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(rels), channels, size, size), dtype=np.uint8)
    for i, rel in enumerate(rels):
        path = Path(folder) / rel
        try:
            with Image.open(path) as im:
                im = im.convert(mode).resize((size, size), Image.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8).reshape(size, size, channels).transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the image ({exc}); remove or replace it") from None
    return out


def _workers(n_images: int, requested: int | None) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(requested or cores, cores, math.ceil(n_images / _CHUNK)))


def _build(folder: Path, files: list[str], labels: list[int], size: int, channels: int, dest: Path,
           workers: int | None) -> None:
    """Decode every image into ``dest`` (written under a temporary name, renamed when complete)."""
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(files)
    tasks = [(str(folder), files[s:s + _CHUNK], size, channels) for s in range(0, n, _CHUNK)]
    sums = np.zeros(channels)
    sq = np.zeros(channels)
    t0 = time.perf_counter()
    nw = _workers(n, workers)
    try:
        with open(tmp / "images.u8", "wb") as fh:
            if nw == 1:
                results = map(_decode_chunk, tasks)
                pool = None
            else:
                pool = get_context("spawn").Pool(nw)
                results = pool.imap(_decode_chunk, tasks)
            try:
                for arr in results:  # in order: each chunk goes to its place in the file
                    fh.write(arr.tobytes())
                    f = arr.astype(np.float64) / 255.0
                    sums += f.sum(axis=(0, 2, 3))
                    sq += (f * f).sum(axis=(0, 2, 3))
            finally:
                if pool is not None:
                    pool.terminate()
            fh.flush()
            os.fsync(fh.fileno())
        meta = commit_cache(tmp, dest, labels, sums, sq, [n, channels, size, size], t0, folder=str(folder), workers=nw)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _logger.info("decoded %d images of %s at %dx%d in %.1f s (%d processes); cached in %s", n, folder, size, size,
                 meta["seconds"], nw, dest)


def commit_cache(tmp: Path, dest: Path, labels: Sequence[int] | np.ndarray, sums: np.ndarray, sq: np.ndarray,
                 shape: Sequence[int], t0: float, **record: Any) -> dict[str, Any]:
    """Finish a cache built under ``tmp`` (its ``images.u8`` written and synced): the labels, the
    per-channel statistics from the pixel ``sums`` and squared sums (of [0, 1] values), ``meta.json``,
    then the rename to ``dest`` - or, when another process committed the same cache meanwhile, theirs
    is kept. The caller removes ``tmp`` on failure."""
    n, channels, size = int(shape[0]), int(shape[1]), int(shape[2])
    np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
    count = n * size * size
    mean = sums / count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 0.0))
    meta = {"version": CACHE_VERSION, "images": n, "shape": [n, channels, size, size], "mean": mean.tolist(),
            "std": [max(float(s), 1e-3) for s in std], "seconds": time.perf_counter() - t0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(dest)
    except OSError:  # another process built the same cache meanwhile: keep theirs
        if not (dest / "meta.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def cached_folder(folder: Path, classes: Sequence[str], size: int, channels: int, workers: int | None = None,
                  root: Path | None = None) -> FolderImages:
    """The images of ``folder`` at ``size`` x ``size`` with ``channels``, decoded once into the cache
    (``root``, default the user cache's ``images/``) and opened from there afterwards."""
    files, labels = list_folder(folder, classes)
    if not files:
        raise DataError(f"image folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its class sub-directories")
    if len(set(labels)) < 2:
        raise DataError(f"image folder {folder} has images of only {len(set(labels))} class; at least 2 are needed")
    key = folder_fingerprint(folder, files, size, channels)
    dest = (root or cache_dir("images")) / f"{key}-{size}px-{channels}ch"
    built = not (dest / "meta.json").is_file()
    if built:
        try:
            _build(folder, files, labels, size, channels, dest, workers)
        except OSError as exc:
            raise DataError(f"could not write the decoded images of {folder} to {dest.parent} ({exc}); free some space "
                            "there or point HWNAS_IMAGE_CACHE at a disk with room (about "
                            f"{len(files) * channels * size * size / 2**20:.0f} MiB)") from exc
    return open_cache(dest, len(files), folder, built)


def open_cache(dest: Path, images: int, source: Any, built: bool = False) -> FolderImages:
    """A built cache directory (``images.u8``, ``labels.npy``, ``meta.json``) opened for reading, checked
    against the ``images`` its ``source`` (a folder, a shard directory) holds."""
    try:
        meta = json.loads((dest / "meta.json").read_text())
        y = torch.from_numpy(np.load(dest / "labels.npy"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{dest}: the image cache is damaged ({exc}); delete the directory and rerun") from exc
    if meta.get("version") != CACHE_VERSION or meta.get("images") != images or len(y) != images:
        raise DataError(f"{dest}: the image cache does not match {source} ({meta.get('images')} images cached, "
                        f"{images} in the source); delete the directory and rerun")
    x = DiskImages(dest / "images.u8", meta["shape"])
    return FolderImages(x, y, tuple(meta["mean"]), tuple(meta["std"]), dest, built)
