"""Latency of a run's network beside the hand-designed networks, measured together (interleaved).

The networks are measured in the same cycles (round-robin, ``hardware.processes`` fresh processes
each, anchored to the table's calibration networks, as the run's own profile is), and the whole
measurement is repeated ``--repeats`` times: every repetition is reported, with the ratio of the
run's network to each reference per repetition, so the comparison does not rest on one session's
luck. Networks: the run's final architecture (``metrics.json``), MobileNetV2-like, all-fused and
the plain conv-BN network (where the space offers a 3x3 conv at every downsampling), plus any
``--arch LABEL=ARCH``.

With ``--run`` the measurement is also written to the run directory (``references.json``), where the run's
report picks it up: ``python -m hwnas_darts.fit --resume RUN`` rewrites ``report.md`` and ``metrics.json``
with the references on the candidates' plot and this network's latency relative to each.

    python tools/side_by_side.py --run runs/fashion_mnist_best --repeats 3 --json side_by_side.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_search import hand_designed  # noqa: E402

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.hardware.measure import MeasureSettings  # noqa: E402
from hwnas_darts.hardware.model import measure_arch_timings  # noqa: E402
from hwnas_darts.io import atomic_write_json  # noqa: E402
from hwnas_darts.lut import obtain_table  # noqa: E402
from hwnas_darts.hardware.roofline import count_macs  # noqa: E402
from hwnas_darts.network import build_network  # noqa: E402
from hwnas_darts.report import REFERENCES_FILE  # noqa: E402
from hwnas_darts.space import Arch, SearchSpace  # noqa: E402


def networks(space: SearchSpace, run: Path | None, extra: list[str]) -> dict[str, Arch]:
    nets: dict[str, Arch] = {}
    if run is not None:
        mpath = run / "metrics.json"
        if not mpath.is_file():
            raise SystemExit(f"{run}: no metrics.json - give the directory of a finished fit run")
        m = json.loads(mpath.read_text())
        if m.get("space_id") not in (None, space.space_id):
            raise SystemExit(f"{run} was searched in space {m.get('space_id')}, not in this config's space "
                             f"{space.space_id}: pass the run's config with --config")
        nets["run"] = space.validate(Arch.from_string(m["arch"], space_id=space.space_id))
    try:
        refs = hand_designed(space, plain=True)
    except SystemExit:
        refs = hand_designed(space)
    nets.update(refs)
    for spec in extra:
        label, sep, text = spec.partition("=")
        if not sep:
            raise SystemExit(f"--arch takes LABEL=ARCH, got {spec!r}")
        nets[label] = space.validate(Arch.from_string(text, space_id=space.space_id))
    return nets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="the config (default: the run's config.yaml with --run, else "
                                                  "configs/fashion_mnist.yaml)")
    p.add_argument("--run", default=None, help="a finished fit run directory whose network is compared")
    p.add_argument("--arch", action="append", default=[], help="LABEL=ARCH: another network (repeatable)")
    p.add_argument("--repeats", type=int, default=3, help="independent repetitions of the whole measurement")
    p.add_argument("--json", default=None, help="write every repetition here")
    p.add_argument("overrides", nargs="*", help="config overrides such as hardware.processes=3")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    if a.config is None and a.run:
        a.config = str(Path(a.run) / "config.yaml")
        if not Path(a.config).is_file():
            p.error(f"{a.run} has no config.yaml - give a fit run directory, or pass --config")
    cfg = load_config(a.config, a.overrides)
    space = SearchSpace.from_config(cfg)
    nets = networks(space, Path(a.run) if a.run else None, a.arch)
    settings = MeasureSettings.from_config(cfg.hardware)
    table, source = obtain_table(cfg, space, settings)
    labels, archs = list(nets), list(nets.values())
    x_shape = (settings.batch_size, *space.input_shape)
    import torch

    macs = {k: count_macs(build_network(space, v).eval(), torch.randn(*x_shape)) for k, v in nets.items()}
    reps = []
    for r in range(a.repeats):
        t0 = time.perf_counter()
        info: dict = {}
        timings = measure_arch_timings(space, archs, settings, table, info=info)
        reps.append({"repeat": r, "seconds": round(time.perf_counter() - t0, 1), "anchor_factor": info.get("anchor_factor"),
                     "median_ms": {k: t.median_ms for k, t in zip(labels, timings)},
                     "raw_median_ms": {k: t.raw_median_ms for k, t in zip(labels, timings)},
                     "process_medians_ms": {k: t.process_medians_ms for k, t in zip(labels, timings)}})
        print(f"repeat {r + 1}/{a.repeats}: " + ", ".join(f"{k} {t.median_ms:.2f} ms" for k, t in zip(labels, timings)),
              flush=True)
    first = labels[0]
    print(f"\nbatch {settings.batch_size}, {settings.record()['name']}, {settings.processes} processes per repeat, "
          f"table {source}\n")
    print("| network | arch | MMACs/image | " + " | ".join(f"ms rep {r + 1}" for r in range(a.repeats))
          + " | mean ms | spread | ratio to " + first + " (per repeat) |")
    print("|" + "---|" * (5 + a.repeats))
    for k in labels:
        v = [rep["median_ms"][k] for rep in reps]
        ratios = [rep["median_ms"][k] / rep["median_ms"][first] for rep in reps]
        print(f"| {k} | `{nets[k].to_string()}` | {macs[k] / settings.batch_size / 1e6:.1f} | "
              + " | ".join(f"{x:.2f}" for x in v)
              + f" | {statistics.fmean(v):.2f} | {min(v):.2f}-{max(v):.2f} | "
              + ", ".join(f"{x:.2f}" for x in ratios) + " |")
    record = {"config": a.config, "run": a.run, "device": settings.record(), "batch_size": settings.batch_size,
              "table": source, "archs": {k: v.to_string() for k, v in nets.items()}, "macs_per_batch": macs,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "repeats": reps}
    if a.json:
        atomic_write_json(Path(a.json), record)
    if a.run:
        atomic_write_json(Path(a.run) / REFERENCES_FILE, record)
        print(f"\nwritten to {Path(a.run) / REFERENCES_FILE}; `python -m hwnas_darts.fit --resume {a.run}` adds the "
              "references to the run's report.md and metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
