"""Write Fashion-MNIST as an image folder of JPEGs: ``OUT/train/<class>/*.jpg`` and ``OUT/test/<class>/*.jpg``.

A real folder of real images, at a chosen size, channel count and number of images, for the image
folder path's tests and benchmarks (``data.dataset=imagefolder data.root=OUT``). Beyond the 60,000
training images, each further copy of an image is shifted by a few pixels and possibly mirrored,
so no two files are identical. Images are resized (bilinear) and encoded in worker processes.

    python tools/make_imagefolder.py --out /tmp/fmnist_jpg --size 64 --count 100000 --test-count 10000
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas_darts.config import DataConfig  # noqa: E402
from hwnas_darts.datasets import FASHION_MNIST_CLASSES, load_arrays  # noqa: E402

DIRS = [c.replace("/", "-").replace(" ", "_").lower() for c in FASHION_MNIST_CLASSES]


def _variant(img: np.ndarray, copy: int, rng: np.random.Generator) -> np.ndarray:
    """Copy ``copy`` (0 = the original) of a 28x28 image: shifted by up to 2 pixels, maybe mirrored."""
    if copy == 0:
        return img
    dy, dx = rng.integers(-2, 3, 2)
    out = np.roll(np.roll(img, int(dy), axis=0), int(dx), axis=1)
    return out[:, ::-1] if rng.random() < 0.5 else out


def _write(task: tuple[str, np.ndarray, np.ndarray, list[int], int, int, int, int]) -> int:
    from PIL import Image

    root, images, labels, copies, start, size, channels, quality = task
    rng = np.random.default_rng(start)
    for k, (img, label, copy) in enumerate(zip(images, labels, copies)):
        im = Image.fromarray(np.ascontiguousarray(_variant(img, copy, rng)), mode="L")
        if size != 28:
            im = im.resize((size, size), Image.BILINEAR)
        if channels == 3:
            im = im.convert("RGB")
        im.save(Path(root) / DIRS[int(label)] / f"{start + k:06d}.jpg", quality=quality)
    return len(images)


def write_split(root: Path, x: np.ndarray, y: np.ndarray, count: int, size: int, channels: int, quality: int,
                workers: int) -> None:
    for d in DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    idx = np.arange(count) % len(x)
    copies = (np.arange(count) // len(x)).tolist()
    chunk = 2000
    tasks = [(str(root), x[idx[s:s + chunk]], y[idx[s:s + chunk]], copies[s:s + chunk], s, size, channels, quality)
             for s in range(0, count, chunk)]
    if workers == 1:
        for t in tasks:
            _write(t)
    else:
        with get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write, tasks):
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (Fashion-MNIST is 28)")
    ap.add_argument("--count", type=int, default=10000, help="training images (beyond 60,000: shifted copies)")
    ap.add_argument("--test-count", type=int, default=2000, help="test images (at most 10,000)")
    ap.add_argument("--channels", type=int, choices=(1, 3), default=3)
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", help="directory of the Fashion-MNIST IDX files (default: where the package finds them)")
    args = ap.parse_args(argv)
    if args.count < 1 or not 1 <= args.test_count <= 10000 or args.size < 4:
        raise SystemExit("--count must be >= 1, --test-count 1..10000 and --size >= 4")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty; choose a new directory (nothing was written)")
    arr = load_arrays(DataConfig(dataset="fashion_mnist", root=args.root, download=False))
    t0 = time.perf_counter()
    write_split(out / "train", arr.train_x[:, 0].numpy(), arr.train_y.numpy(), args.count, args.size, args.channels,
                args.quality, args.workers)
    write_split(out / "test", arr.test_x[:, 0].numpy(), arr.test_y.numpy(), args.test_count, args.size, args.channels,
                args.quality, args.workers)
    print(f"wrote {args.count} training and {args.test_count} test JPEGs ({args.size}x{args.size}, "
          f"{args.channels} channel(s)) under {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
