"""The latency table: one measured row per (op, exact input shape) on one device.

A table is a JSON file::

    {"schema_version": 1, "kind": "hwnas_darts.lut",
     "device": {kind, name, torch, dtype, batch_size, threads, memory_format, mode},
     "roofline": {peak_flops, bandwidth, ridge} | null,
     "space_ids": [...],                       # spaces whose every row is present
     "rows": [{op, c_in, c_out, stride, h, w, latency_ms, iqr_ms, p90_ms, samples_ms, macs, bytes, params}],
     "calibration": {...} | null,              # learned on whole-network measurements (model.py)
     "validation": {...} | null}

Rows are keyed by :class:`~hwnas_darts.space.space.OpKey`, so layers of the same shape share a
row and a table can be extended with the rows a new space or a scaled network needs, measuring
only what is missing. A table is refused for a device record that differs (device, torch,
dtype, batch, threads, memory format, mode) unless the caller explicitly allows it; a miss
names the missing key; rows are never invented.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..errors import LUTError, LUTMissError
from ..io import atomic_write_json, read_json
from ..space.ops import build_op
from ..space.space import OpKey, SearchSpace
from .measure import MeasureSettings, measure_module, measure_modules
from .roofline import Roofline, count_bytes, count_macs, count_params, intensity

__all__ = ["LUT_SCHEMA_VERSION", "Row", "LatencyTable", "measure_row", "build_table", "build_table_sharded",
           "DEVICE_FIELDS"]

_logger = logging.getLogger(__name__)

LUT_SCHEMA_VERSION = 2  # 2: two reference workloads, per-row calibration
DEVICE_FIELDS = ("kind", "name", "torch", "dtype", "batch_size", "threads", "memory_format", "mode", "reference",
                 "allocator")


@dataclass
class Row:
    """One measured op at one input shape."""

    key: OpKey
    latency_ms: float
    iqr_ms: float
    p90_ms: float
    macs: int
    bytes: int
    params: int
    samples_ms: list[float] = field(default_factory=list)

    @property
    def intensity(self) -> float:
        return intensity(self.macs, self.bytes)

    def to_dict(self) -> dict[str, Any]:
        d = self.key.to_dict()
        d.update(latency_ms=self.latency_ms, iqr_ms=self.iqr_ms, p90_ms=self.p90_ms, macs=self.macs,
                 bytes=self.bytes, params=self.params, samples_ms=self.samples_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Row":
        key = OpKey(str(d["op"]), int(d["c_in"]), int(d["c_out"]), int(d["stride"]), int(d["h"]), int(d["w"]))
        lat = float(d["latency_ms"])
        if not lat >= 0:
            raise ValueError(f"row {key}: latency must be >= 0, got {lat}")
        return cls(key, lat, float(d.get("iqr_ms", 0.0)), float(d.get("p90_ms", lat)), int(d["macs"]),
                   int(d["bytes"]), int(d.get("params", 0)), [float(v) for v in d.get("samples_ms", [])])


class LatencyTable:
    """Measured rows for one device record, plus its roofline and the learned calibration."""

    def __init__(self, device: dict[str, Any], roofline: Roofline | None = None, rows: Iterable[Row] = (),
                 space_ids: Iterable[str] = (), calibration: dict[str, Any] | None = None,
                 validation: dict[str, Any] | None = None, meta: dict[str, Any] | None = None):
        self.device = dict(device)
        self.roofline = roofline
        self.rows: dict[OpKey, Row] = {r.key: r for r in rows}
        self.space_ids = list(dict.fromkeys(space_ids))
        self.calibration = calibration
        self.validation = validation
        self.meta = dict(meta or {})
        self.path: Path | None = None

    # -- lookups ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: OpKey) -> bool:
        return key in self.rows

    def lookup(self, key: OpKey) -> Row:
        """The row of ``key``; a miss raises :class:`LUTMissError` naming the key."""
        try:
            return self.rows[key]
        except KeyError:
            where = f" ({self.path})" if self.path else ""
            raise LUTMissError(
                f"the latency table{where} has no row for {key} on {self.device.get('name')}; measure the missing "
                "rows with `python -m hwnas_darts.lut build --config CONFIG --lut FILE` (only missing rows are measured)"
            ) from None

    def missing(self, keys: Iterable[OpKey]) -> list[OpKey]:
        return [k for k in dict.fromkeys(keys) if k not in self.rows]

    def covers(self, space: SearchSpace) -> bool:
        return not self.missing(space.all_keys())

    # -- compatibility ------------------------------------------------------------------------
    def mismatches(self, record: dict[str, Any]) -> list[str]:
        """Fields of the device record that differ from ``record``."""
        out = []
        for f in DEVICE_FIELDS:
            if self.device.get(f) != record.get(f):
                out.append(f"{f}: table has {self.device.get(f)!r}, this run has {record.get(f)!r}")
        return out

    def check_device(self, record: dict[str, Any], allow_mismatch: bool = False) -> None:
        """Refuse a table measured under another device record (unless explicitly allowed)."""
        diffs = self.mismatches(record)
        if not diffs:
            return
        where = f" {self.path}" if self.path else ""
        msg = (f"latency table{where} was measured under another device record:\n    " + "\n    ".join(diffs)
               + "\n  Its latencies do not describe this target. Build a table for this device "
                 "(`python -m hwnas_darts.lut build`), or set hardware.allow_mismatch=true to use it anyway.")
        if allow_mismatch:
            _logger.warning(msg.replace("\n", " "))
            return
        raise LUTError(msg)

    def check_space(self, space: SearchSpace, allow_extend: bool = False) -> None:
        """Refuse a table built for another space unless it already covers this one."""
        if space.space_id in self.space_ids:
            missing = self.missing(space.all_keys())
            if missing:
                raise LUTError(f"latency table claims space {space.space_id} but lacks {len(missing)} of its rows "
                               f"(first: {missing[0]}); the file was edited or truncated - rebuild it")
            return
        if self.covers(space):
            return
        if allow_extend:
            return
        missing = self.missing(space.all_keys())
        raise LUTError(
            f"latency table was built for space(s) {', '.join(self.space_ids) or '(none)'}, not for this config's space "
            f"{space.space_id}, and lacks {len(missing)} of its rows (first: {missing[0]}). Build a table for this "
            "space, or extend this one with `python -m hwnas_darts.lut build --config CONFIG --lut FILE`."
        )

    # -- I/O ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": LUT_SCHEMA_VERSION,
            "kind": "hwnas_darts.lut",
            "device": self.device,
            "roofline": self.roofline.to_dict() if self.roofline else None,
            "space_ids": self.space_ids,
            "meta": self.meta,
            "calibration": self.calibration,
            "validation": self.validation,
            "rows": [r.to_dict() for r in sorted(self.rows.values(), key=lambda r: r.key)],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table atomically (temp file + rename)."""
        path = atomic_write_json(path, self.to_dict(), indent=1)
        self.path = Path(path)
        return self.path

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table") -> "LatencyTable":
        if not isinstance(data, dict) or data.get("kind") != "hwnas_darts.lut":
            raise LUTError(f"{source} is not a hwnas_darts latency table (no 'kind: hwnas_darts.lut')")
        if data.get("schema_version") != LUT_SCHEMA_VERSION:
            raise LUTError(f"{source} has schema version {data.get('schema_version')!r}; this version reads "
                           f"{LUT_SCHEMA_VERSION} - rebuild the table")
        try:
            device = data["device"]
            if not isinstance(device, dict) or any(f not in device for f in DEVICE_FIELDS):
                raise ValueError("device record is incomplete")
            rows = [Row.from_dict(r) for r in data["rows"]]
            roof = Roofline.from_dict(data["roofline"]) if data.get("roofline") else None
        except (KeyError, TypeError, ValueError) as exc:
            raise LUTError(f"{source} is malformed ({type(exc).__name__}: {exc}); rebuild it") from exc
        return cls(device, roof, rows, data.get("space_ids", []), data.get("calibration"), data.get("validation"),
                   data.get("meta"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        """Read a table; a missing, truncated or foreign file raises :class:`LUTError`."""
        try:
            data = read_json(path, "latency table")
        except FileNotFoundError as exc:
            raise LUTError(str(exc)) from exc
        except ValueError as exc:
            raise LUTError(str(exc)) from exc
        table = cls.from_dict(data, f"latency table {path}")
        table.path = Path(path)
        return table

    # -- summaries -------------------------------------------------------------------------------
    @property
    def reference_nominal(self) -> dict[str, float] | None:
        """Nominal latencies of the reference workloads that normalise this table's timings."""
        v = self.meta.get("reference_nominal_ms")
        return {str(k): float(x) for k, x in v.items()} if isinstance(v, dict) else None

    def measure(self, items, settings: MeasureSettings, progress=None, intensities=None) -> list:
        """Measure modules the way this table's rows were measured (same reference nominal)."""
        timings, ref = measure_modules(items, settings, progress, ref_nominal=self.reference_nominal,
                                       intensities=intensities)
        if ref is not None and self.reference_nominal is None:
            self.meta["reference_nominal_ms"] = ref
        return timings

    def row_metrics(self, row: Row) -> dict[str, float]:
        """Intensity, achieved rate and efficiency of one row against the roofline."""
        out = {"intensity": row.intensity, "achieved_flops": 0.0, "efficiency": float("nan")}
        if row.latency_ms > 0:
            out["achieved_flops"] = 2.0 * row.macs / (row.latency_ms / 1e3)
        if self.roofline is not None:
            out["efficiency"] = self.roofline.efficiency(row.macs, row.bytes, row.latency_ms)
        return out


def _row_module(key: OpKey) -> torch.nn.Module:
    return build_op(key.op, key.c_in, key.c_out, key.stride, dropout=0.0).eval()


def _row_counts(key: OpKey, module: torch.nn.Module, settings: MeasureSettings) -> tuple[int, int, int]:
    x_cpu = torch.randn(settings.batch_size, key.c_in, key.h, key.w)
    macs = count_macs(module, x_cpu)
    nbytes = count_bytes(module, x_cpu)
    if settings.torch_dtype != torch.float32:  # bytes scale with the element size of the measured dtype
        nbytes = int(nbytes * torch.empty((), dtype=settings.torch_dtype).element_size() / 4)
    return macs, nbytes, count_params(module)


def _start_build(table: LatencyTable | None, record: dict[str, Any], roofline: Roofline | None,
                 space: SearchSpace | None, keys: Iterable[OpKey]) -> tuple[LatencyTable, list[OpKey]]:
    """The table to extend (checked against ``record``) and the keys it lacks."""
    if table is None:
        table = LatencyTable(record, roofline)
    else:
        table.check_device(record)
        if roofline is not None:
            table.roofline = roofline
    wanted = (list(space.all_keys()) if space is not None else []) + list(keys)
    return table, table.missing(wanted)


def _finish_build(table: LatencyTable, space: SearchSpace | None, t0: float, measured: int) -> LatencyTable:
    if space is not None and space.space_id not in table.space_ids:
        table.space_ids.append(space.space_id)
    table.meta["build_seconds"] = round(float(table.meta.get("build_seconds", 0.0)) + time.perf_counter() - t0, 3)
    table.meta["rows_measured_last_build"] = measured
    return table


def measure_row(key: OpKey, settings: MeasureSettings, ref_nominal: dict[str, float] | None = None) -> Row:
    """Measure one op at one shape: latency (device), MACs (fvcore), bytes (dispatch counter)."""
    module = _row_module(key)
    macs, nbytes, params = _row_counts(key, module, settings)
    t = measure_module(module, (key.c_in, key.h, key.w), settings, ref_nominal=ref_nominal,
                       intensity=intensity(macs, nbytes))
    return Row(key, t.median_ms, t.iqr_ms, t.p90_ms, macs, nbytes, params, t.samples_ms)


def build_table(
    space: SearchSpace | None,
    settings: MeasureSettings,
    table: LatencyTable | None = None,
    keys: Iterable[OpKey] = (),
    roofline: Roofline | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    chunk: int = 48,
) -> LatencyTable:
    """Measure every row ``space`` (and ``keys``) needs that ``table`` lacks.

    Rows are measured in chunks, each chunk in interleaved rounds (see
    :func:`~hwnas_darts.hardware.measure.measure_modules`); after each chunk the partial table
    is saved to ``checkpoint`` (atomically), so an interrupted build resumes where it stopped.

    Args:
        space: the search space whose rows are needed (``None``: only ``keys``).
        settings: where and how to measure.
        table: an existing table to extend (its device record must match ``settings``).
        keys: extra rows, e.g. of a scaled network.
        roofline: stored with the table when given.
        progress: called as ``progress(done, total)`` in rows.
        checkpoint: where to save partial progress.
        chunk: rows per chunk.

    Returns:
        The (new or extended) table.
    """
    table, todo = _start_build(table, settings.record(), roofline, space, keys)
    t0 = time.perf_counter()
    total = len(todo)
    done_before = 0
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        modules = [_row_module(k) for k in part]
        counts = [_row_counts(k, m, settings) for k, m in zip(part, modules)]

        def _prog(done: int, of: int, base=done_before, n=len(part)) -> None:
            if progress:  # in rows
                progress(base + int(done * n / max(of, 1)), total)

        timings = table.measure([(m, (k.c_in, k.h, k.w)) for k, m in zip(part, modules)], settings, _prog,
                                intensities=[intensity(c[0], c[1]) for c in counts])
        done_before += len(part)
        for k, (macs, nbytes, params), t in zip(part, counts, timings):
            table.rows[k] = Row(k, t.median_ms, t.iqr_ms, t.p90_ms, macs, nbytes, params, t.samples_ms)
        if checkpoint:
            table.save(checkpoint)
    return _finish_build(table, space, t0, len(todo))


def _measure_shard(settings: MeasureSettings, keys: list[dict[str, Any]], ref_nominal: dict[str, float] | None
                   ) -> tuple[list[dict[str, Any]], dict[str, float] | None]:
    """Worker of :func:`build_table_sharded`: measure ``keys`` on ``settings.device``."""
    if settings.is_cuda:
        torch.cuda.set_device(torch.device(settings.device))
    table = LatencyTable(settings.record())
    if ref_nominal is not None:
        table.meta["reference_nominal_ms"] = ref_nominal
    built = build_table(None, settings, table, keys=[OpKey(**k) for k in keys])
    return [r.to_dict() for r in built.rows.values()], built.reference_nominal


def build_table_sharded(space: SearchSpace | None, settings: MeasureSettings, devices: list[str],
                        table: LatencyTable | None = None, keys: Iterable[OpKey] = (),
                        roofline: Roofline | None = None) -> LatencyTable:
    """Measure the missing rows on several devices of one node at once and merge them.

    Each device gets every ``len(devices)``-th missing row and measures it in its own process
    (``spawn``), under the same settings apart from the device. The devices must share one
    device record (same model, dtype, batch, memory format): a table describes one kind of device.
    """
    import dataclasses
    import multiprocessing as mp

    if len(devices) < 2:
        return build_table(space, dataclasses.replace(settings, device=devices[0] if devices else settings.device),
                           table, keys, roofline)
    per_device = [dataclasses.replace(settings, device=d) for d in devices]
    records = [s.record() for s in per_device]
    if any(r != records[0] for r in records[1:]):
        raise LUTError("the devices given for a sharded table build differ "
                       f"({', '.join(str(r['name']) for r in records)}); a table describes one kind of device")
    table, missing = _start_build(table, records[0], roofline, space, keys)
    todo = [k.to_dict() for k in missing]
    t0 = time.perf_counter()
    if todo:
        shards = [todo[i::len(devices)] for i in range(len(devices))]
        ctx = mp.get_context("spawn")
        with ctx.Pool(len(devices)) as pool:
            results = pool.starmap(_measure_shard, [(s, sh, table.reference_nominal)
                                                     for s, sh in zip(per_device, shards) if sh])
        for rows, ref in results:
            for r in rows:
                row = Row.from_dict(r)
                table.rows[row.key] = row
            if ref is not None and table.reference_nominal is None:
                table.meta["reference_nominal_ms"] = ref
    table.meta["build_devices"] = list(devices)
    return _finish_build(table, space, t0, len(todo))
