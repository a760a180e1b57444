"""Profiling a network on the target device: latency, MACs/FLOPs, params, bytes, I, E, memory.

``python -m hwnas_darts.profile ARCH_OR_MODEL`` profiles either an ``arch.json`` (rebuilt from
the config of its run directory, or ``--config``) or an exported ``model.ts`` / ``model.pt2``.
``fit`` calls :func:`profile_network` on the final network.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from .errors import HwnasError
from .hardware.table import LatencyTable, measure_row
from .hardware.measure import MeasureSettings, measure_modules
from .hardware.roofline import ByteCounter, Roofline, count_bytes, count_macs, count_params, eval_mode, intensity
from .network import TaskNetwork

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["profile_network", "profile_layers", "peak_memory", "profile_stage", "main"]

_logger = logging.getLogger(__name__)


def peak_memory(module: nn.Module, input_shape: tuple[int, ...], settings: MeasureSettings) -> dict[str, int]:
    """Peak memory of one inference: CUDA allocator peak on GPU; on CPU, peak live activation bytes
    (dispatch counter) plus parameters and the input."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    if settings.is_cuda:
        m, x = settings.prepare(module, (settings.batch_size, *input_shape))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.inference_mode():
            m(x)
        torch.cuda.synchronize()
        return {"peak_bytes": int(torch.cuda.max_memory_allocated() - base + params + x.numel() * x.element_size()),
                "activation_peak_bytes": int(torch.cuda.max_memory_allocated() - base), "param_bytes": params}
    x = torch.randn(settings.batch_size, *input_shape)
    counter = ByteCounter()
    with eval_mode(module), torch.inference_mode(), counter:
        module(x)
    act = int(counter.peak_bytes)
    return {"peak_bytes": act + params + x.numel() * x.element_size(), "activation_peak_bytes": act, "param_bytes": params}


def profile_layers(net: TaskNetwork, table: LatencyTable | None, settings: MeasureSettings) -> list[dict[str, Any]]:
    """Per-layer op, shape, MACs, bytes, latency (table row; measured when the table lacks it), share."""
    rows = []
    missing = []
    for layer in net.plan:
        if table is not None and layer.key in table:
            row = table.lookup(layer.key)
            rows.append((layer, row.latency_ms, row.macs, row.bytes, "table"))
        else:
            missing.append(layer)
            rows.append((layer, None, None, None, "measured"))
    if missing:
        measured = {l.key: measure_row(l.key, settings, table.reference_nominal if table else None) for l in missing}
        rows = [(l, *(measured[l.key].latency_ms, measured[l.key].macs, measured[l.key].bytes), src) if lat is None
                else (l, lat, m, b, src) for l, lat, m, b, src in rows]
    total = sum(r[1] for r in rows) or 1.0
    out = []
    for layer, lat, macs, nbytes, src in rows:
        out.append({
            "layer": layer.name, "op": layer.op, "input": [layer.c_in, layer.h, layer.w], "c_out": layer.c_out,
            "stride": layer.stride, "macs": int(macs), "bytes": int(nbytes), "intensity": intensity(macs, nbytes),
            "latency_ms": float(lat), "share": float(lat) / total, "source": src,
        })
    return out


def profile_network(net: nn.Module, input_shape: tuple[int, ...], settings: MeasureSettings,
                    table: LatencyTable | None = None, predicted_ms: float | None = None,
                    layers: bool = True) -> dict[str, Any]:
    """Measured latency (median and p90, at the configured batch and at batch 1), counts and roofline.

    Latencies are measured like the table's rows (same reference normalisation when the table
    uses one), so they compare directly with ``predicted_ms``.
    """
    nominal = table.reference_nominal if table is not None else None
    batch1 = MeasureSettings(**{**settings.__dict__, "batch_size": 1})
    x = torch.randn(settings.batch_size, *input_shape)
    macs = count_macs(net, x)
    nbytes = count_bytes(net, x)
    (t_cfg,), _ = measure_modules([(net, input_shape)], settings, ref_nominal=nominal,
                                  intensities=[intensity(macs, nbytes)])
    (t_one,), _ = measure_modules([(net, input_shape)], batch1, ref_nominal=None)
    if settings.torch_dtype != torch.float32:
        nbytes = int(nbytes * torch.empty((), dtype=settings.torch_dtype).element_size() / 4)
    roof: Roofline | None = table.roofline if table is not None else None
    out: dict[str, Any] = {
        "batch_size": settings.batch_size,
        "latency_ms": t_cfg.median_ms,
        "latency_ms_p90": t_cfg.p90_ms,
        "latency_ms_iqr": t_cfg.iqr_ms,
        "latency_ms_raw": t_cfg.raw_median_ms,
        "latency_ms_batch1": t_one.median_ms,
        "latency_ms_batch1_p90": t_one.p90_ms,
        "latency_ms_predicted": predicted_ms,
        "throughput_per_s": settings.batch_size / (t_cfg.median_ms / 1e3),
        "macs": int(macs),
        "flops": int(2 * macs),
        "params": count_params(net),
        "bytes": int(nbytes),
        "intensity": intensity(macs, nbytes),
        "efficiency": roof.efficiency(macs, nbytes, t_cfg.median_ms) if roof else None,
        "achieved_flops_per_s": 2 * macs / (t_cfg.median_ms / 1e3),
        "roofline": roof.to_dict() if roof else None,
        "device": settings.record(),
        "reference_normalised": bool(settings.use_reference and nominal is not None),
    }
    out.update(peak_memory(net, input_shape, settings))
    if layers and isinstance(net, TaskNetwork):
        out["layers"] = profile_layers(net, table, settings)
    return out


def _plan_network(meta: dict[str, Any], run_dir: Path, config: str | None) -> TaskNetwork | None:
    """The eager network of an exported model's embedded architecture, when its run directory's
    config (or ``config``) describes the same space; for the per-layer table of a model file."""
    from .config import load_config
    from .network import build_network
    from .space.arch import Arch
    from .space.space import SearchSpace

    cfg_path = Path(config) if config else run_dir / "config.yaml"
    if not meta.get("arch") or not cfg_path.is_file():
        return None
    try:
        space = SearchSpace.from_config(load_config(cfg_path))
        if meta.get("space_id") not in (None, space.space_id):
            return None
        return build_network(space, Arch.from_string(meta["arch"]))
    except HwnasError as exc:
        _logger.info("no per-layer table: %s", exc)
        return None


def _load_model_file(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    from .predict import load_model

    model, meta = load_model(path)
    return model, meta


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import setup_logging, run_cli

    p = argparse.ArgumentParser(prog="python -m hwnas_darts.profile",
                                description="Profile an architecture (arch.json) or an exported model (model.ts / model.pt2).")
    p.add_argument("target", help="arch.json (its run directory's config.yaml is used) or model.ts / model.pt2")
    p.add_argument("--config", help="config YAML of the space, for an arch.json or a model file outside its run directory")
    p.add_argument("--lut", help="latency table (default: the run directory's lut.json, if any)")
    p.add_argument("--device", help="override hardware.device (cpu, cuda)")
    p.add_argument("--batch", type=int, help="override hardware.batch_size")
    p.add_argument("--json", dest="json_out", help="write the profile to this JSON file")
    args = p.parse_args(argv)
    setup_logging()

    def run() -> int:
        from .config import load_config
        from .io import atomic_write_json
        from .network import build_network
        from .space.arch import Arch
        from .space.space import SearchSpace

        target = Path(args.target)
        if not target.exists():
            raise HwnasError(f"{target} does not exist")
        run_dir = target.parent
        table = None
        lut_path = Path(args.lut) if args.lut else (run_dir / "lut.json")
        if lut_path.is_file():
            table = LatencyTable.load(lut_path)
        if target.suffix == ".json":
            cfg_path = Path(args.config) if args.config else run_dir / "config.yaml"
            cfg = load_config(cfg_path)
            overrides_hw(cfg, args)
            space = SearchSpace.from_config(cfg)
            arch = Arch.load(target)
            net = build_network(space, arch)
            settings = MeasureSettings.from_config(cfg.hardware)
            if table is not None:
                table.check_device(settings.record(), cfg.hardware.allow_mismatch)
            pred = None
            if table is not None:
                from .hardware.model import LatencyModel

                try:
                    pred = LatencyModel(table, space).predict(arch)
                except HwnasError as exc:
                    _logger.warning("no prediction: %s", exc)
            prof = profile_network(net, net.input_shape, settings, table, pred)
            prof["arch"] = arch.to_string()
        else:
            model, meta = _load_model_file(target)
            if meta.get("format_kind") == "onnx":
                raise HwnasError(f"{target}: profiling an ONNX model is not supported (onnxruntime has no dispatcher to "
                                 "count MACs and bytes on); profile model.ts, model.pt2 or arch.json of the same run")
            cfg_path = Path(args.config) if args.config else run_dir / "config.yaml"
            if cfg_path.is_file():  # measure as the run measured (threads, memory format, reference)
                cfg = load_config(cfg_path)
                overrides_hw(cfg, args)
                settings = MeasureSettings.from_config(cfg.hardware)
            else:
                settings = MeasureSettings(device=args.device or "cpu", batch_size=args.batch or 32)
            shape = tuple(meta["input_shape"])
            usable = table if table is not None and not table.mismatches(settings.record()) else None
            prof = profile_network(model, shape, settings, usable, layers=False)
            prof["arch"] = meta.get("arch")
            if meta.get("params") is not None:  # a frozen TorchScript module holds its weights as constants
                prof["params"] = int(meta["params"])
            prof["format"] = {".ts": "torchscript", ".pt2": "torch.export program"}.get(target.suffix, target.suffix)
            plan_net = _plan_network(meta, run_dir, args.config)
            if plan_net is not None:
                prof["layers"] = profile_layers(plan_net, usable, settings)
                prof["layers_source"] = "the model's embedded architecture rebuilt from the run's config"
            else:
                prof["layers_source"] = ("not available: the exported file has no layer structure and no config.yaml "
                                         "of its space was found (pass --config)")
        print_profile(prof)
        if args.json_out:
            atomic_write_json(args.json_out, prof)
        return 0

    def overrides_hw(cfg, a):
        if a.device:
            cfg.hardware.device = a.device
        if a.batch:
            cfg.hardware.batch_size = a.batch

    return run_cli(run)


def print_profile(prof: dict[str, Any]) -> None:
    from .cli import console
    from rich.table import Table

    con = console()
    t = Table(title=f"profile{(' of ' + prof['arch']) if prof.get('arch') else ''}", show_header=False)
    def fmt(v):
        return f"{v:,.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    for k in ("batch_size", "latency_ms", "latency_ms_p90", "latency_ms_batch1", "latency_ms_predicted", "macs", "flops",
              "params", "bytes", "intensity", "efficiency", "peak_bytes"):
        if prof.get(k) is not None:
            t.add_row(k, fmt(prof[k]))
    con.print(t)
    if prof.get("layers"):
        lt = Table(title="per layer")
        for col in ("layer", "op", "input", "MACs", "bytes", "I", "latency ms", "share"):
            lt.add_column(col)
        for r in prof["layers"]:
            lt.add_row(r["layer"], r["op"], "x".join(map(str, r["input"])), f"{r['macs']:,}", f"{r['bytes']:,}",
                       f"{r['intensity']:.2f}", f"{r['latency_ms']:.3f}", f"{100 * r['share']:.1f}%")
        con.print(lt)
    elif prof.get("layers_source"):
        con.print(f"per-layer table: {prof['layers_source']}")


if __name__ == "__main__":
    sys.exit(main())


def profile_stage(ctx: "RunContext") -> dict[str, Any]:
    """The run's ``profile`` stage: ``profile.json`` of the retrained network. The latency beside
    the prediction is measured as the table's networks were (anchored to its calibration
    networks, in ``hardware.processes`` fresh processes); the in-process figure is kept too."""
    import time

    from .hardware.model import measure_arch_timings
    from .io import atomic_write_json, read_json

    if ctx.state.done("profile"):
        return read_json(ctx.path("profile.json"))
    t0 = time.perf_counter()
    try:
        pred = ctx.model.predict(ctx.arch)
    except HwnasError as exc:
        _logger.warning("no latency prediction for the final network: %s", exc)
        pred = None
    size = ctx.input_size()
    prof = profile_network(ctx.retrained.network, (ctx.space.in_channels, size, size), ctx.settings, ctx.table, pred)
    if pred is not None:
        info: dict = {}
        t = measure_arch_timings(ctx.space, [ctx.arch], ctx.settings, ctx.table, info=info)[0]
        prof.update(latency_ms_in_process=prof["latency_ms"], latency_ms=t.median_ms,
                    latency_ms_processes=t.process_medians_ms, latency_anchor_factor=info.get("anchor_factor"),
                    throughput_per_s=ctx.settings.batch_size / (t.median_ms / 1e3))
    prof["arch"] = ctx.arch.to_string()
    atomic_write_json(ctx.path("profile.json"), prof)
    ctx.state.mark("profile", time.perf_counter() - t0)
    return prof
