"""LitData shards measured: writing them, streaming them into the row cache, and why rows are read
from that cache rather than from LitData's random access.

For each image folder (``tools/make_imagefolder.py``), in a fresh process with an empty image cache:

* **optimize**: ``hwnas_darts.shards.optimize_folder`` (decode + resize in LitData's workers,
  written as shards) - seconds, shard bytes;
* **stream**: the first ``data.dataset=litdata`` load - the shards read once, in order, into the
  local row cache - seconds, images/s, and the process's peak RSS;
* **reopen**: a second load (what every later stage and run pays);
* **random access**: ``StreamingDataset[i]`` for ``--sample`` random rows (LitData's own random
  access, what a map-style loader over the shards would do), images/s; against the sequential
  stream's images/s.

    python tools/bench_shards.py /tmp/f10k /tmp/f100k --size 64 --json runs/bench_shards.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import rss_mib, measure_in_child  # noqa: E402


def measure_one(folder: str, shards: str, size: int, channels: int, workers: int | None, sample: int) -> dict:
    import numpy as np

    from hwnas_darts.config import load_config
    from hwnas_darts.datasets import load_arrays
    from hwnas_darts.shards import _single_process_stream, optimize_folder

    res: dict = {"folder": folder, "size": size}
    t0 = time.perf_counter()
    meta = optimize_folder(folder, shards, size, channels, workers)
    res["optimize_s"] = time.perf_counter() - t0
    res["train_images"] = meta["splits"]["train"]["images"]
    res["shard_mib"] = sum(f.stat().st_size for f in Path(shards).rglob("*.bin")) / 2**20
    res["optimize_workers_rss_mib"] = rss_mib(resource.RUSAGE_CHILDREN)
    cfg = load_config(None, ["data.dataset=litdata", f"data.root={shards}"]).data
    rss0 = rss_mib()
    t0 = time.perf_counter()
    a = load_arrays(cfg)
    res["stream_s"] = time.perf_counter() - t0
    res["stream_images_per_s"] = (len(a.train_y) + len(a.test_y)) / res["stream_s"]
    res["rss_before_stream_mib"], res["rss_after_stream_mib"] = rss0, rss_mib()
    t0 = time.perf_counter()
    load_arrays(cfg)
    res["reopen_s"] = time.perf_counter() - t0
    ds = _single_process_stream(Path(shards) / "train")
    idx = np.random.default_rng(0).permutation(len(ds))[:sample]
    t0 = time.perf_counter()
    for i in idx:
        ds[int(i)]
    res["random_access_images_per_s"] = len(idx) / (time.perf_counter() - t0)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="optimize processes (default: every core)")
    ap.add_argument("--sample", type=int, default=500, help="random rows read through LitData's random access")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child mode: FOLDER SHARDS
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one[0], args.one[1], args.size, args.channels, args.workers, args.sample)))
        return 0
    rows = []
    for folder in args.folders:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, HWNAS_IMAGE_CACHE=str(Path(tmp) / "cache"))
            child = [folder, str(Path(tmp) / "shards"), "--size", str(args.size), "--channels", str(args.channels),
                     "--sample", str(args.sample), "_"]
            if args.workers:
                child += ["--workers", str(args.workers)]
            rows.append(measure_in_child(__file__, child, env, folder))
    print(f"{'train images':>12s} {'optimize s':>11s} {'shards MiB':>11s} {'stream s':>9s} {'stream img/s':>13s} "
          f"{'reopen s':>9s} {'peak RSS MiB':>13s} {'random-access img/s':>20s}")
    for r in rows:
        print(f"{r['train_images']:12d} {r['optimize_s']:11.1f} {r['shard_mib']:11.0f} {r['stream_s']:9.1f} "
              f"{r['stream_images_per_s']:13.0f} {r['reopen_s']:9.2f} {r['rss_after_stream_mib']:13.0f} "
              f"{r['random_access_images_per_s']:20.0f}")
    if args.json:
        from hwnas_darts.io import atomic_write_json

        atomic_write_json(Path(args.json), {"rows": rows, "size": args.size, "channels": args.channels})
    return 0


if __name__ == "__main__":
    sys.exit(main())
