"""LitData shards: an image folder written once as ``litdata.optimize`` shards, and read back with
``litdata.StreamingDataset`` as ``data.dataset: litdata``.

Writing (``python -m hwnas_darts.shards FOLDER OUT --image-size 64``): the folder's images are
decoded, converted and resized in LitData's worker processes and stored as uint8 ``[C, H, W]``
arrays with their label and their row number, one shard directory per split (``train/``, and
``test/`` when the folder has a ``test`` or ``val`` directory), beside ``hwnas_shards.json`` (the
classes, the size, the channels, the per-split counts). The output appears complete or not at all
(written under a temporary name, renamed at the end).

Reading: each machine streams a split's shards once, in order (LitData's sequential read: about
40x faster here than its random access, ``docs/BENCHMARKS.md`` section 12), into the same local
row cache an image folder gets (:mod:`hwnas_darts.imagecache`, keyed by the shards' index), and
every stage and later run reads rows from there. DDP ranks read disjoint shares of the rows through
the distributed sampler; the seeded weight-training / architecture-validation split is the same on
every rank. A truncated chunk file, a foreign shard directory or a malformed item is named in a
one-line :class:`~hwnas_darts.errors.DataError`.

LitData is an optional dependency: ``pip install --no-deps litdata`` plus ``.[litdata]`` (its
PyPI metadata names torchvision, which this package neither needs nor may import).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import DataError
from .imagecache import FolderImages, _decode_chunk, commit_cache, folder_layout, list_folder, open_cache
from .io import cache_dir

__all__ = ["SHARDS_META", "SHARDS_FORMAT", "optimize_folder", "read_meta", "load_split", "main"]

_logger = logging.getLogger(__name__)

SHARDS_META = "hwnas_shards.json"
SHARDS_FORMAT = 1
_TASK = 128  # images per optimize task


def _litdata():
    try:
        import litdata
    except ImportError as exc:
        raise DataError("LitData shards need the litdata package: pip install --no-deps 'litdata>=0.2.70,<0.3' && "
                        "pip install -e '.[litdata]' (./setup.sh installs both)") from exc
    return litdata


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _emit(task: tuple[str, list[str], list[int], int, int, int]) -> Iterator[dict[str, Any]]:
    """One optimize task: decode a run of images (in a LitData worker) and yield them as items."""
    folder, rels, labels, start, size, channels = task
    arr = _decode_chunk((folder, rels, size, channels))
    for i in range(len(rels)):
        yield {"index": start + i, "image": arr[i], "label": int(labels[i])}


def optimize_folder(root: str | os.PathLike, out: str | os.PathLike, size: int = 32, channels: int = 3,
                    workers: int | None = None, chunk_mb: int = 64, force: bool = False) -> dict[str, Any]:
    """Write the image folder ``root`` as LitData shards under ``out``; returns the metadata written."""
    litdata = _litdata()
    root, out = Path(root), Path(out)
    if size < 1 or channels not in (1, 3):
        raise DataError(f"image size {size} / channels {channels}: the size must be positive and channels 1 or 3")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DataError(f"{out} exists and is not empty; choose another directory or pass --force to replace it")
    train, test, classes = folder_layout(root)
    splits = {"train": train} if test is None else {"train": train, "test": test}
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta: dict[str, Any] = {"format": SHARDS_FORMAT, "classes": classes, "size": size, "channels": channels,
                            "source": str(root.resolve()), "litdata": litdata.__version__, "splits": {}}
    t0 = time.perf_counter()
    try:
        for split, folder in splits.items():
            files, labels = list_folder(folder, classes)
            if not files:
                raise DataError(f"image folder {folder} holds no images in its class sub-directories")
            tasks = [(str(folder), files[s:s + _TASK], labels[s:s + _TASK], s, size, channels)
                     for s in range(0, len(files), _TASK)]
            nw = max(1, min(workers or (os.cpu_count() or 1), len(tasks)))
            litdata.optimize(fn=_emit, inputs=tasks, output_dir=str(tmp / split), chunk_bytes=f"{chunk_mb}MB",
                             num_workers=nw, mode="overwrite")
            meta["splits"][split] = {"dir": split, "images": len(files)}
        meta["seconds"] = round(time.perf_counter() - t0, 2)
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        (tmp / SHARDS_META).write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """The shards' metadata, checked: a directory this package did not write is refused."""
    path = Path(root) / SHARDS_META
    if not path.is_file():
        raise DataError(f"{root}: no {SHARDS_META}; it is not a shard directory written by this package "
                        "(write one with: python -m hwnas_darts.shards IMAGE_FOLDER OUT --image-size N)")
    try:
        meta = json.loads(path.read_text())
        ok = (meta["format"] == SHARDS_FORMAT and len(meta["classes"]) >= 2 and int(meta["size"]) > 0
              and meta["channels"] in (1, 3) and "train" in meta["splits"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable shard metadata ({exc}); write the shards again") from None
    if not ok:
        raise DataError(f"{path}: foreign or damaged shard metadata (format {meta.get('format')!r}, expected "
                        f"{SHARDS_FORMAT}); write the shards again")
    return meta


def _check_chunks(split_dir: Path) -> dict[str, Any]:
    """LitData's index of a split, with every chunk file present at the size the index records."""
    index_path = split_dir / "index.json"
    try:
        index = json.loads(index_path.read_text())
        chunks = index["chunks"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{index_path}: missing or unreadable LitData index ({exc}); write the shards again") from None
    for c in chunks:
        f = split_dir / c["filename"]
        have = f.stat().st_size if f.is_file() else None
        if have != c["chunk_bytes"]:
            raise DataError(f"{f}: shard chunk is {'missing' if have is None else f'{have} bytes'}, the index records "
                            f"{c['chunk_bytes']} (truncated or foreign); copy it again or write the shards again")
    return index


def _chunk_of(index: dict[str, Any], item: int) -> str:
    seen = 0
    for c in index["chunks"]:
        seen += c["chunk_size"]
        if item < seen:
            return c["filename"]
    return index["chunks"][-1]["filename"] if index["chunks"] else "?"


def _single_process_stream(split_dir: Path):
    """A StreamingDataset over every item of the split, in order, whatever the distributed environment
    (each machine materialises the whole split; the DDP sampler shares the rows out afterwards)."""
    litdata = _litdata()
    from litdata.utilities.env import _DistributedEnv

    ds = litdata.StreamingDataset(str(split_dir), shuffle=False)
    ds.distributed_env = _DistributedEnv(world_size=1, global_rank=0, num_nodes=1)
    return ds


def _materialise(split_dir: Path, n: int, size: int, channels: int, num_classes: int, dest: Path) -> None:
    """Stream a split's shards once into the row-cache layout at ``dest`` (temporary name, renamed)."""
    index = _check_chunks(split_dir)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    row = channels * size * size
    labels = np.full(n, -1, dtype=np.int64)
    sums, sq = np.zeros(channels), np.zeros(channels)
    t0 = time.perf_counter()
    k = 0
    try:
        fd = os.open(tmp / "images.u8", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, n * row)
            it = iter(_single_process_stream(split_dir))
            while True:
                try:
                    item = next(it)
                except StopIteration:
                    break
                except Exception as exc:  # LitData's own error for a damaged chunk: name the chunk
                    raise DataError(f"{split_dir / _chunk_of(index, k)}: cannot read shard item {k} ({type(exc).__name__}: "
                                    f"{exc}); copy it again or write the shards again") from None
                try:
                    i, img, lab = int(item["index"]), np.asarray(item["image"]), int(item["label"])
                except (KeyError, TypeError, ValueError):
                    raise DataError(f"{split_dir / _chunk_of(index, k)}: item {k} is not an image shard item (keys "
                                    f"{sorted(item) if isinstance(item, dict) else type(item).__name__}); these shards "
                                    "were not written by python -m hwnas_darts.shards") from None
                if img.dtype != np.uint8 or img.shape != (channels, size, size) or not 0 <= i < n \
                        or not 0 <= lab < num_classes or labels[i] != -1:
                    raise DataError(f"{split_dir / _chunk_of(index, k)}: item {k} (row {i}, label {lab}, image "
                                    f"{img.dtype}{list(img.shape)}) does not match the shards' metadata ({n} rows, "
                                    f"{num_classes} classes, uint8{[channels, size, size]}) or repeats a row; "
                                    "write the shards again")
                os.pwrite(fd, np.ascontiguousarray(img).tobytes(), i * row)
                labels[i] = lab
                f = img.astype(np.float64) / 255.0
                sums += f.sum(axis=(1, 2))
                sq += (f * f).sum(axis=(1, 2))
                k += 1
            os.fsync(fd)
        finally:
            os.close(fd)
        if k != n:
            raise DataError(f"{split_dir}: {k} items in the shards, the metadata records {n}; write the shards again")
        commit_cache(tmp, dest, labels, sums, sq, [n, channels, size, size], t0, folder=str(split_dir), workers=1,
                     source="litdata")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _logger.info("streamed %d images of %s into the row cache in %.1f s: %s", n, split_dir, time.perf_counter() - t0, dest)


def load_split(root: str | os.PathLike, split: str, meta: dict[str, Any] | None = None,
               cache_root: Path | None = None) -> FolderImages:
    """A split of the shards at ``root`` as rows on local disk (streamed once per machine, then reused)."""
    meta = meta or read_meta(root)
    if split not in meta["splits"]:
        raise DataError(f"{root}: no {split!r} split in the shards (has {sorted(meta['splits'])})")
    split_dir = Path(root) / meta["splits"][split]["dir"]
    n, size, channels = int(meta["splits"][split]["images"]), int(meta["size"]), int(meta["channels"])
    try:
        key = hashlib.sha1((split_dir / "index.json").read_bytes() + json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
    except OSError as exc:
        raise DataError(f"{split_dir}: missing LitData index ({exc}); write the shards again") from None
    dest = (cache_root or cache_dir("images")) / f"litdata-{key}-{size}px-{channels}ch"
    built = not (dest / "meta.json").is_file()
    if built:
        try:
            _materialise(split_dir, n, size, channels, len(meta["classes"]), dest)
        except OSError as exc:
            raise DataError(f"could not write the rows of {split_dir} to {dest.parent} ({exc}); free some space there or "
                            f"point HWNAS_IMAGE_CACHE at a disk with room (about {n * channels * size * size / 2**20:.0f} MiB)"
                            ) from exc
    return open_cache(dest, n, split_dir, built)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hwnas_darts.shards",
                                 description="Write an image folder (one sub-directory per class; or train/ and test/ "
                                             "of those) as LitData shards for data.dataset=litdata.")
    ap.add_argument("folder", help="the image folder")
    ap.add_argument("out", help="the shard directory to write (data.root of the runs that read it)")
    ap.add_argument("--image-size", type=int, default=32, help="side of the stored images in pixels (default 32)")
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3))
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: every core)")
    ap.add_argument("--chunk-mb", type=int, default=64, help="size of a shard chunk file in MB")
    ap.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        meta = optimize_folder(args.folder, args.out, args.image_size, args.channels, args.workers, args.chunk_mb,
                               args.force)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v['images']}" for k, v in meta["splits"].items())
    print(f"wrote LitData shards of {args.folder} to {args.out}: {counts} images at {meta['size']}px, "
          f"{meta['channels']} channel(s), {len(meta['classes'])} classes, in {meta['seconds']:.1f} s. "
          f"Read them with data.dataset=litdata data.root={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
