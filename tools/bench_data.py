"""The image-folder data path measured: decode once, reopen, memory, images/s against training.

For each image folder (made with ``tools/make_imagefolder.py``), in a fresh process of its own, so
its peak resident memory is its own:

* **decode**: the first load - every image decoded, converted and resized into the image cache
  (``hwnas_darts.imagecache``, worker processes) - its seconds, and the peak RSS of the process and
  of its workers;
* **reopen**: a second load of the same folder (what every later stage and run pays);
* **epoch**: one pass of the retraining loader over every training image (augmented batches of
  ``--batch-size``), its images/s and the process's peak RSS after it - the memory a run's data
  path needs at this folder size;
* **streamed**: what decoding on the fly would cost instead - PIL decode + resize per image, single
  process - as seconds per epoch;
* **consumption**: images/s one training step of a network of the space takes at this image size
  (forward + backward + SGD at the same batch size), to compare with the data path's rate.

    python tools/bench_data.py /tmp/f10k /tmp/f30k /tmp/f100k --size 64 --json runs/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def measure_in_child(script: str, args: list[str], env: dict[str, str], what: str) -> dict:
    """Run ``script --one ...`` in a fresh process (its peak RSS its own) and return the JSON it prints
    last; a failed child ends the benchmark with its error output."""
    proc = subprocess.run([sys.executable, script, "--one", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{what}: measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_one(folder: str, size: int, channels: int, batch: int, consume_steps: int) -> dict:
    import itertools

    import torch
    import torch.nn.functional as F

    from hwnas_darts.config import DataConfig
    from hwnas_darts.data import HwnasDataModule, make_loader
    from hwnas_darts.imagecache import list_folder

    cfg = DataConfig(dataset="imagefolder", root=folder, image_size=size, channels=channels, batch_size=batch,
                     search_subset=None)
    res: dict = {"folder": folder, "size": size, "channels": channels, "rss_start_mib": rss_mib()}
    t0 = time.perf_counter()
    dm = HwnasDataModule(cfg, seed=0, mode="retrain")
    dm.setup()
    res["decode_s"] = time.perf_counter() - t0
    res["rss_after_decode_mib"] = rss_mib()
    res["workers_rss_mib"] = rss_mib(resource.RUSAGE_CHILDREN)
    res["train_images"], res["test_images"] = len(dm.arrays.train_x), len(dm.arrays.test_x)
    t0 = time.perf_counter()
    dm2 = HwnasDataModule(cfg, seed=0, mode="retrain")
    dm2.setup()
    res["reopen_s"] = time.perf_counter() - t0
    loader = make_loader(dm.retrain_dataset(), batch, True, 0, drop_last=False)
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    res["epoch_s"] = time.perf_counter() - t0
    res["data_images_per_s"] = n / res["epoch_s"]
    res["rss_after_epoch_mib"] = rss_mib()
    # streamed: PIL decode + resize of every image, timed on a sample
    from PIL import Image

    root = Path(folder) / "train" if (Path(folder) / "train").is_dir() else Path(folder)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, _ = list_folder(root, classes)
    sample = files[:: max(1, len(files) // 500)][:500]
    t0 = time.perf_counter()
    for rel in sample:
        with Image.open(root / rel) as im:
            im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR).tobytes()
    per_image = (time.perf_counter() - t0) / len(sample)
    res["streamed_decode_ms_per_image"] = 1e3 * per_image
    res["streamed_epoch_decode_s"] = per_image * res["train_images"]
    # consumption: a network of the default space at this image size
    from hwnas_darts.config import load_config
    from hwnas_darts.network import build_network
    from hwnas_darts.space import SearchSpace

    space = SearchSpace.from_config(load_config(None, [f"data.image_size={size}", f"data.channels={channels}",
                                                       "data.dataset=imagefolder", f"data.root={folder}"]))
    net = build_network(space, space.sample(seed=0)).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    batches = list(itertools.islice(iter(loader), 3))
    times = []
    for i in range(consume_steps + 2):
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    res["train_images_per_s"] = batch / times[len(times) // 2]
    res["data_over_train"] = res["data_images_per_s"] / res["train_images_per_s"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--consume-steps", type=int, default=8)
    ap.add_argument("--keep-cache", action="store_true", help="decode into the user's cache (default: a fresh temporary one)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure one folder, print JSON
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.size, args.channels, args.batch_size, args.consume_steps)))
        return 0
    rows = []
    for folder in args.folders:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ) if args.keep_cache else dict(os.environ, HWNAS_IMAGE_CACHE=cache)
            rows.append(measure_in_child(__file__, [folder, "--size", str(args.size), "--channels", str(args.channels),
                                                    "--batch-size", str(args.batch_size), "--consume-steps",
                                                    str(args.consume_steps), "_"], env, folder))
    print(f"{'train images':>12s} {'decode s':>9s} {'reopen s':>9s} {'peak RSS MiB':>13s} {'workers MiB':>12s} "
          f"{'epoch s':>8s} {'data img/s':>11s} {'train img/s':>12s} {'streamed decode s/epoch':>24s}")
    for r in rows:
        print(f"{r['train_images']:12d} {r['decode_s']:9.1f} {r['reopen_s']:9.2f} {r['rss_after_epoch_mib']:13.0f} "
              f"{r['workers_rss_mib']:12.0f} {r['epoch_s']:8.1f} {r['data_images_per_s']:11.0f} "
              f"{r['train_images_per_s']:12.0f} {r['streamed_epoch_decode_s']:24.1f}")
    if args.json:
        from hwnas_darts.io import atomic_write_json

        atomic_write_json(Path(args.json), {"rows": rows, "size": args.size, "channels": args.channels,
                                            "batch_size": args.batch_size})
    return 0


if __name__ == "__main__":
    sys.exit(main())
