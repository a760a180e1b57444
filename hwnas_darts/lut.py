"""``python -m hwnas_darts.lut build|probe|validate|show``: latency tables for your device.

* ``build``: measure every (op, shape) row the config's space needs on the configured device
  (only the rows a given ``--lut`` table lacks), probe the roofline, measure random networks
  end to end to learn the calibration, validate on held-out networks, save.
* ``probe``: measure the device's peak compute rate and memory bandwidth (and store them in a
  table with ``--lut``).
* ``validate``: measure N held-out random networks and compare with the table's predictions.
* ``show``: print a table's device record, roofline, calibration, validation and rows.

:func:`obtain_table` is what ``fit`` uses: a table from a path, or (``hardware.lut: auto``)
a matching one from ``configs/luts/`` or the user cache, or a freshly built one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import Config, load_config
from .errors import LUTError
from .io import cache_dir
from .hardware.table import LatencyTable, build_table, build_table_sharded
from .hardware.measure import MeasureSettings
from .hardware.calibration import calibrate_and_validate, validate_model
from .hardware.model import LatencyModel
from .hardware.roofline import probe_roofline
from .space.space import SearchSpace

__all__ = ["obtain_table", "obtain_model", "ensure_calibration", "main"]

_logger = logging.getLogger(__name__)


def _device_slug(record: dict[str, Any]) -> str:
    blob = json.dumps(record, sort_keys=True).encode()
    name = "".join(ch if ch.isalnum() else "-" for ch in str(record.get("name", "device")).lower()).strip("-")[:40]
    return f"{record['kind']}-{name}-{hashlib.sha1(blob).hexdigest()[:8]}"


def _search_dirs() -> list[Path]:
    dirs = []
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        d = base / "configs" / "luts"
        if d.is_dir() and d not in dirs:
            dirs.append(d)
    dirs.append(cache_dir("luts"))
    return dirs


def find_matching_table(record: dict[str, Any], space: SearchSpace) -> LatencyTable | None:
    """A stored table for this device record that covers ``space`` and is calibrated for it."""
    for d in _search_dirs():
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.json")):
            try:
                table = LatencyTable.load(path)
            except LUTError as exc:
                _logger.warning("ignoring unreadable latency table %s: %s", path, exc)
                continue
            if table.mismatches(record) or not table.covers(space):
                continue
            cal = table.calibration or {}
            if cal.get("space_id") == space.space_id:
                return table
    return None


def ensure_calibration(table: LatencyTable, space: SearchSpace, settings: MeasureSettings, n_calib: int,
                       n_valid: int, seed: int = 0, progress: Callable[[str, int, int], None] | None = None) -> None:
    """Fit (and validate) the calibration for ``space`` unless the table already has one for it."""
    cal = table.calibration or {}
    if cal.get("space_id") == space.space_id or n_calib < 3:
        return
    calibrate_and_validate(table, space, settings, n_calib, n_valid, seed=seed, progress=progress)


def resolve_devices(names: Sequence[str]) -> list[str]:
    """``["all"]`` -> every visible CUDA device; otherwise the names as given."""
    if list(names) == ["all"]:
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return list(names)


def measure_rows(space: SearchSpace | None, settings: MeasureSettings, table: LatencyTable | None, devices: Sequence[str],
                 roofline=None, progress: Callable[[int, int], None] | None = None, keys=()) -> LatencyTable:
    """Measure missing rows on one device (with progress) or sharded over several devices of this node."""
    devs = resolve_devices(devices)
    if len(devs) > 1:
        _logger.info("measuring the latency table on %d devices: %s", len(devs), ", ".join(devs))
        return build_table_sharded(space, settings, devs, table, keys=keys, roofline=roofline)
    return build_table(space, settings, table, keys=keys, roofline=roofline, progress=progress)


def obtain_table(cfg: Config, space: SearchSpace, settings: MeasureSettings,
                 progress: Callable[[str, int, int], None] | None = None, save_cache: bool = True) -> tuple[LatencyTable, str]:
    """The latency table for this run and where it came from (``loaded PATH`` / ``built``).

    ``hardware.lut``: a path (loaded, checked against this device record and space, extended
    with missing rows and calibrated if needed), ``auto`` (a matching stored table, else build
    and cache one) or ``build`` (always measure afresh).
    """
    hw = cfg.hardware
    record = settings.record()
    source = "built"
    table: LatencyTable | None = None
    if hw.lut not in (None, "auto", "build"):
        table = LatencyTable.load(hw.lut)
        table.check_device(record, hw.allow_mismatch)
        source = f"loaded {hw.lut}"
    elif hw.lut == "auto":
        table = find_matching_table(record, space)
        if table is not None:
            source = f"loaded {table.path}"
    changed = False
    if table is None or table.missing(space.all_keys()):
        if table is not None and table.mismatches(record):
            raise LUTError(f"latency table {table.path} lacks rows for this space and was measured under another "
                           "device record, so they cannot be added; build a table for this device")
        roof = None
        if hw.probe and (table is None or table.roofline is None):
            roof = probe_roofline(settings)
        table = measure_rows(space, settings, table, hw.build_devices, roof,
                             (lambda d, t: progress("measure ops", d, t)) if progress else None)
        changed = True
    elif hw.probe and table.roofline is None and not table.mismatches(record):
        table.roofline = probe_roofline(settings)
        changed = True
    if space.space_id not in table.space_ids:
        table.space_ids.append(space.space_id)
    if not table.mismatches(record):
        before = (table.calibration or {}).get("space_id")
        ensure_calibration(table, space, settings, hw.calibration_archs, hw.validation_archs, cfg.seed, progress)
        changed = changed or (table.calibration or {}).get("space_id") != before
    if changed and save_cache and hw.lut in ("auto", "build") and not table.mismatches(record):
        path = cache_dir("luts") / f"{_device_slug(record)}-{space.space_id}.json"
        try:
            table.save(path)
            _logger.info("latency table cached at %s", path)
        except OSError as exc:
            _logger.warning("could not cache the latency table at %s: %s", path, exc)
    return table, source


def obtain_model(cfg: Config, space: SearchSpace) -> tuple[LatencyModel, LatencyTable, str]:
    """This machine's latency model for the config's space, its table obtained as ``fit`` does
    (:func:`obtain_table`: reused when one matches, else built and cached), and the table's source."""
    table, source = obtain_table(cfg, space, MeasureSettings.from_config(cfg.hardware))
    _logger.info("latency table: %s", source)
    return LatencyModel(table, space), table, source


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def rich_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), transient=False)


def progress_callback(prog) -> Callable[[str, int, int], None]:
    tasks: dict[str, Any] = {}

    def cb(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = prog.add_task(what, total=total)
        prog.update(tasks[what], completed=done, total=total)

    return cb


def validation_lines(val: dict[str, Any]) -> list[str]:
    """Human-readable lines of a validation report: each predictor's error beside the
    measurement's own repeatability (same networks, same units)."""
    lines = []
    for key, label in (("table_sum", "table sum"), ("learned", "learned model")):
        m = val.get(key)
        if m:
            lines.append(f"{label:13s} Spearman {m['spearman']:.3f}  Kendall {m['kendall']:.3f}  MAPE {m['mape_pct']:.2f}%  "
                         f"max {m.get('max_err_pct', float('nan')):.1f}%  within +-10%: {100 * m['within_10pct']:.0f}%  "
                         f"(n={m['n']})")
    rep = val.get("repeatability")
    if rep:
        lines.append(f"{'repeatability':13s} Spearman {rep['spearman']:.3f} between the two halves of each measurement, "
                     f"which differ by {rep['mape_pct']:.2f}% on average (max {rep['max_pct']:.1f}%): noise of the "
                     f"full measurement about {rep['mape_pct'] / 2:.2f}%")
        pr = rep.get("processes")
        if pr:
            lines.append(f"{'':13s} Spearman {pr['spearman']:.3f} (lowest {pr['spearman_min']:.3f}) between the "
                         f"{pr['n_processes']} fresh processes of the measurement, which differ by {pr['mape_pct']:.2f}% "
                         f"on average: noise of their mean about {pr['noise_pct']:.2f}%")
        lines.append(f"{'noise floor':13s} {rep['noise_pct']:.2f}% - no model's error against this measurement can be "
                     "told apart below it")
    if val.get("macs_vs_latency"):
        lines.append(f"{'MACs':13s} Spearman {val['macs_vs_latency']['spearman']:.3f} (rank only)")
    if val.get("unit"):
        lines.append(f"units: {val['unit']}")
    return lines


def show_table(table: LatencyTable, limit: int | None = None) -> None:
    from .cli import console
    from rich.table import Table

    con = console()
    head = Table(title=f"latency table {table.path or ''}", show_header=False)
    for k, v in table.device.items():
        head.add_row(k, str(v))
    head.add_row("rows", str(len(table)))
    head.add_row("spaces", ", ".join(table.space_ids) or "-")
    if table.roofline:
        r = table.roofline
        head.add_row("roofline", f"{r.peak_flops / 1e9:,.1f} GFLOP/s, {r.bandwidth / 1e9:,.1f} GB/s, ridge {r.ridge:.2f} FLOP/B")
    if table.reference_nominal:
        head.add_row("references", ", ".join(f"{k} {v:.3f} ms" for k, v in table.reference_nominal.items())
                     + " (timings normalised to them)")
    cal = table.calibration or {}
    if cal:
        cvm = cal.get("cv_mape_pct")
        head.add_row("calibration", f"{cal.get('n_archs')} networks, fit MAPE {cal.get('fit_mape_pct', float('nan')):.2f}%"
                     + (f", cross-validated {cvm:.2f}%" if cvm is not None else "")
                     + f", {len(cal.get('rows', {}))} row corrections, intercept {cal.get('intercept_ms', 0):.3f} ms, "
                     f"space {cal.get('space_id')}")
    val = table.validation or {}
    if val:
        for line in validation_lines(val):
            head.add_row("validation", line)
    con.print(head)
    rows = Table(title="rows")
    for col in ("op", "input", "out", "s", "ms", "IQR", "MACs", "bytes", "I", "E"):
        rows.add_column(col)
    for i, row in enumerate(sorted(table.rows.values(), key=lambda r: r.key)):
        if limit is not None and i >= limit:
            rows.add_row("...", "", "", "", "", "", "", "", "", "")
            break
        m = table.row_metrics(row)
        k = row.key
        rows.add_row(k.op, f"{k.c_in}x{k.h}x{k.w}", str(k.c_out), str(k.stride), f"{row.latency_ms:.4f}",
                     f"{row.iqr_ms:.4f}", f"{row.macs:,}", f"{row.bytes:,}", f"{m['intensity']:.2f}",
                     "-" if m["efficiency"] != m["efficiency"] else f"{m['efficiency']:.3f}")
    con.print(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import run_cli, setup_logging

    ap = argparse.ArgumentParser(prog="python -m hwnas_darts.lut", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="measure a latency table for the config's space on its device")
    b.add_argument("--config", help="config YAML (default: configs/fashion_mnist.yaml)")
    b.add_argument("--lut", help="existing table to extend (only missing rows are measured)")
    b.add_argument("--out", help="where to save (default: the --lut file, else luts/<device>-<space>.json)")
    b.add_argument("--no-calibrate", action="store_true", help="skip the end-to-end calibration and validation")
    b.add_argument("--recalibrate", action="store_true", help="refit the calibration even if the table has one")
    b.add_argument("--devices", help="measure rows on several GPUs of this node in parallel: cuda:0,cuda:1 or all")
    b.add_argument("overrides", nargs="*", help="dotted overrides, e.g. hardware.batch_size=64")
    p = sub.add_parser("probe", help="measure the device roofline (peak FLOP/s and bandwidth)")
    p.add_argument("--config")
    p.add_argument("--lut", help="store the roofline in this table")
    p.add_argument("overrides", nargs="*")
    v = sub.add_parser("validate", help="compare a table's predictions with end-to-end measurements")
    v.add_argument("--config")
    v.add_argument("--lut", required=True)
    v.add_argument("-n", type=int, default=30, help="held-out random networks (default 30)")
    v.add_argument("--seed", type=int, default=12345, help="sampling seed of the held-out networks")
    v.add_argument("--calibration-networks", action="store_true",
                   help="measure the table's own calibration networks instead (their error should match the fit's)")
    v.add_argument("--json", help="write the whole validation report here")
    v.add_argument("--plot", help="write the predicted-vs-measured scatter plot here (PNG)")
    v.add_argument("overrides", nargs="*")
    s = sub.add_parser("show", help="print a table")
    s.add_argument("lut")
    s.add_argument("--limit", type=int, default=40, help="rows to print (0: all)")
    args = ap.parse_args(argv)
    setup_logging()

    def run() -> int:
        if args.cmd == "show":
            show_table(LatencyTable.load(args.lut), args.limit or None)
            return 0
        cfg = load_config(args.config, args.overrides)
        settings = MeasureSettings.from_config(cfg.hardware)
        if args.cmd == "probe":
            roof = probe_roofline(settings)
            print(f"device: {settings.record()['name']}\npeak compute: {roof.peak_flops / 1e9:,.1f} GFLOP/s ({cfg.hardware.dtype})\n"
                  f"bandwidth: {roof.bandwidth / 1e9:,.1f} GB/s\nridge point: {roof.ridge:.2f} FLOP/byte")
            if args.lut:
                table = LatencyTable.load(args.lut)
                table.check_device(settings.record(), cfg.hardware.allow_mismatch)
                table.roofline = roof
                table.save(args.lut)
                print(f"stored in {args.lut}")
            return 0
        space = SearchSpace.from_config(cfg)
        if args.cmd == "validate":
            table = LatencyTable.load(args.lut)
            table.check_device(settings.record(), cfg.hardware.allow_mismatch)
            table.check_space(space)
            model = LatencyModel(table, space)
            archs = None
            if args.calibration_networks:
                from .space.arch import Arch

                archs = [Arch.from_string(a) for a in (table.calibration or {}).get("archs", [])]
                if not archs:
                    raise LUTError(f"{args.lut} has no calibration networks to re-measure")
            if args.n < 3 and archs is None:
                raise LUTError(f"-n {args.n}: validation needs at least 3 networks")
            with rich_progress() as prog:
                cb = progress_callback(prog)
                val = validate_model(model, space, settings, args.n, args.seed, archs=archs,
                                     progress=lambda d, t: cb("measure networks", d, t))
            if archs is not None:
                print(f"the table's {len(archs)} calibration networks (fit MAPE "
                      f"{table.calibration.get('fit_mape_pct', float('nan')):.2f}%):")
            for line in validation_lines(val):
                print(line)
            if args.json:
                from .io import atomic_write_json

                atomic_write_json(args.json, val)
                print(f"report: {args.json}")
            if args.plot:
                from .plots import plot_lut_validation

                plot_lut_validation(val, Path(args.plot))
                print(f"plot: {args.plot}")
            return 0
        # build
        table = LatencyTable.load(args.lut) if args.lut else None
        if table is not None:
            table.check_device(settings.record())
        with rich_progress() as prog:
            cb = progress_callback(prog)
            roof = probe_roofline(settings) if cfg.hardware.probe and (table is None or table.roofline is None) else None
            devices = args.devices.split(",") if args.devices else cfg.hardware.build_devices
            table = measure_rows(space, settings, table, devices, roof, lambda d, t: cb("measure ops", d, t))
            if args.recalibrate:
                table.calibration = None
            if not args.no_calibrate:
                ensure_calibration(table, space, settings, cfg.hardware.calibration_archs, cfg.hardware.validation_archs,
                                   cfg.seed, cb)
        out = Path(args.out) if args.out else (Path(args.lut) if args.lut else
                                               Path("luts") / f"{_device_slug(settings.record())}-{space.space_id}.json")
        table.save(out)
        show_table(table, limit=10)
        print(f"saved {out} ({len(table)} rows, {table.meta.get('build_seconds', 0):.1f} s of measuring)")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
