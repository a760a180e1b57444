"""Run every latency-table row of a config's space once on CUDA, each row named before it runs,
to find the op (and the cuDNN setting) behind a CUDA fault such as "illegal memory access".

    CUDA_LAUNCH_BLOCKING=1 python tools/cuda_row_check.py --config configs/cifar10.yaml
    CUDA_LAUNCH_BLOCKING=1 python tools/cuda_row_check.py --config configs/cifar10.yaml --no-benchmark --only KEY

A CUDA fault ends the process (its context is lost), so the last "row" line printed names the
row that faulted; rerun with ``--skip`` to go on past it. The deployment settings (dtype, batch,
memory format) come from the config's ``hardware`` section.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cifar10.yaml"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-benchmark", action="store_true", help="cudnn.benchmark off (default on, as in measurement)")
    ap.add_argument("--skip", action="append", default=[], help="row key (as printed, quoted) to skip; repeatable")
    ap.add_argument("--only", action="append", default=[], help="run only these row keys; repeatable")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    from hwnas_darts.config import load_config
    from hwnas_darts.hardware.measure import MeasureSettings
    from hwnas_darts.hardware.table import _row_module
    from hwnas_darts.space import SearchSpace

    # the rows run eagerly, one call after another: no graphs (they would hide which kernel faulted)
    cfg = load_config(args.config, [f"hardware.device={args.device}", "hardware.cuda_graphs=false"])
    space = SearchSpace.from_config(cfg)
    s = dataclasses.replace(MeasureSettings.from_config(cfg.hardware), cudnn_benchmark=not args.no_benchmark)
    torch.backends.cudnn.benchmark = s.cudnn_benchmark
    keys = space.all_keys()
    print(f"{len(keys)} rows; {s.dtype}, batch {s.batch_size}, channels_last={s.channels_last}, "
          f"cudnn.benchmark={torch.backends.cudnn.benchmark}, torch {torch.__version__}, "
          f"cudnn {torch.backends.cudnn.version()}", flush=True)
    ok = 0
    with torch.inference_mode():
        for k in keys:
            name = str(k)  # the key as the table's own messages name it
            if name in args.skip or (args.only and name not in args.only):
                continue
            print(f"row {name}", flush=True)
            module, x = s.prepare(_row_module(k), (s.batch_size, k.c_in, k.h, k.w))
            for _ in range(args.repeats):
                module(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            ok += 1
    print(f"all {ok} rows ran", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
