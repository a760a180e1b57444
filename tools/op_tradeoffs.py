"""Per-layer trade-offs in a latency table: MACs vs measured latency of every candidate op.

For each searchable layer of a config's space, lists the candidates with MACs per image, bytes,
intensity I, efficiency E and latency, sorted by latency, and counts the pairs where an op with
*more* MACs runs *faster* than another (the patent's observation that FLOPs mislead).

    python tools/op_tradeoffs.py configs/luts/cpu-amd-epyc-zen3-2threads-fashion_mnist.json [--config CFG] [--act relu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.hardware.table import LatencyTable  # noqa: E402
from hwnas_darts.space import SearchSpace  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lut")
    ap.add_argument("--config")
    ap.add_argument("--act", default="relu", help="only ops with this activation (and skip); 'all' for every op")
    args = ap.parse_args(argv)
    table = LatencyTable.load(args.lut)
    space = SearchSpace.from_config(load_config(args.config))
    batch = table.device["batch_size"]
    inverted = total = 0
    seen = set()
    for layer in space.layers:
        key = (layer.c_in, layer.c_out, layer.stride, layer.h)
        if key in seen:
            continue
        seen.add(key)
        ops = [op for op in layer.candidates if args.act == "all" or op.endswith(args.act)]
        rows = sorted((table.lookup(layer.key(op)) for op in ops), key=lambda r: r.latency_ms)
        print(f"\n{layer.name}: {layer.c_in}x{layer.h}x{layer.w} -> {layer.c_out}, stride {layer.stride} (batch {batch})")
        print(f"| op | MACs/image | latency ms | I (FLOP/B) | E |\n|---|---|---|---|---|")
        for r in rows:
            m = table.row_metrics(r)
            e = "-" if m["efficiency"] != m["efficiency"] else f"{m['efficiency']:.3f}"
            print(f"| `{r.key.op}` | {r.macs // batch:,} | {r.latency_ms:.3f} | {m['intensity']:.2f} | {e} |")
        for i, a in enumerate(rows):
            for b in rows[i + 1:]:
                if a.macs and b.macs:
                    total += 1
                    inverted += a.macs > b.macs  # a is faster but has more MACs
    print(f"\n{inverted} of {total} same-layer op pairs run faster with MORE MACs "
          f"({100 * inverted / max(total, 1):.0f}%): MACs alone misrank them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
