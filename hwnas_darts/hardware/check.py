"""The run's ``lut`` stage: obtain the latency table, and check a stored one on fresh networks.

A stored table describes the machine it was measured on at that time. Each run measures
``hardware.check_archs`` fresh random networks against the table's learned model first and
warns (with the exact command to recalibrate) or recalibrates (``hardware.on_check_fail``) when
it no longer predicts this machine.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .table import LatencyTable

if TYPE_CHECKING:
    from ..context import RunContext

__all__ = ["latency_stage", "check_stored_table"]

_logger = logging.getLogger("hwnas_darts.fit")


def latency_stage(ctx: "RunContext") -> tuple[LatencyTable, dict[str, Any] | None]:
    """The table this run uses (``RUN_DIR/lut.json``) and the run's check of it (None: not checked)."""
    from ..lut import obtain_table, progress_callback, rich_progress

    if ctx.state.done("lut"):
        return LatencyTable.load(ctx.path("lut.json")), None
    t0 = time.perf_counter()
    with rich_progress() as prog:
        table, source = obtain_table(ctx.cfg, ctx.space, ctx.settings, progress_callback(prog))
    check = check_stored_table(ctx, table, source)
    table.save(ctx.path("lut.json"))
    val = table.validation or {}
    info: dict[str, Any] = {"source": source, "rows": len(table)}
    if check is not None:
        info["check"] = {k: v for k, v in check.items() if k not in ("archs", "measured_ms", "predicted_ms",
                                                                     "predicted_raw_ms")}
    if val.get("learned"):
        info["spearman"] = val["learned"]["spearman"]
        info["mape_pct"] = val["learned"]["mape_pct"]
    ctx.state.mark("lut", time.perf_counter() - t0, **info)
    _logger.info("latency table: %s (%d rows)%s", source, len(table),
                 f"; learned model on {val['n']} held-out networks: Spearman {val['learned']['spearman']:.3f}, "
                 f"MAPE {val['learned']['mape_pct']:.1f}%" if val.get("learned") else "")
    return table, check


def check_stored_table(ctx: "RunContext", table: LatencyTable, source: str) -> dict[str, Any] | None:
    """Measure a few fresh networks against a stored table's model; warn or recalibrate when it
    no longer predicts this machine. Returns the check (None when skipped)."""
    from .calibration import calibrate_and_validate, check_table
    from .model import LatencyModel

    hw = ctx.cfg.hardware
    if (not source.startswith("loaded") or hw.check_archs < 3 or not table.calibration
            or table.mismatches(ctx.settings.record())):
        return None
    val = check_table(LatencyModel(table, ctx.space), ctx.space, ctx.settings, hw.check_archs,
                      seed=ctx.cfg.seed * 7919 + 101, tolerance_pct=hw.check_tolerance)
    rep = val.get("repeatability") or {}
    check = {"n": val["n"], "ok": val["ok"], "median_ratio": val["median_ratio"],
             "learned_mape_pct": val["learned"]["mape_pct"], "learned_max_err_pct": val["learned"]["max_err_pct"],
             "learned_spearman": val["learned"]["spearman"], "table_sum_mape_pct": val["table_sum"]["mape_pct"],
             "noise_pct": rep.get("noise_pct"), "tolerance_pct": hw.check_tolerance, "seconds": val["seconds"],
             "action": "none", "archs": val["archs"], "measured_ms": val["measured_ms"],
             "predicted_ms": val["predicted_ms"], "predicted_raw_ms": val["predicted_raw_ms"]}
    _logger.info("latency table check on %d fresh networks: learned model MAPE %.1f%% (max %.1f%%), measured/predicted "
                 "%.3f, measurement noise about %s", val["n"], check["learned_mape_pct"], check["learned_max_err_pct"],
                 check["median_ratio"], f"{rep['noise_pct']:.1f}%" if rep else "n/a")
    if val["ok"]:
        return check
    where = table.path or "the table"
    if hw.on_check_fail == "recalibrate":
        _logger.warning("the stored latency table no longer predicts this machine (MAPE %.1f%%, measured/predicted "
                        "%.2f); refitting its calibration on fresh networks", check["learned_mape_pct"],
                        check["median_ratio"])
        table.calibration = None
        calibrate_and_validate(table, ctx.space, ctx.settings, max(hw.calibration_archs, 3), hw.validation_archs,
                               seed=ctx.cfg.seed + 1)
        check["action"] = "recalibrated"
    else:
        _logger.warning(
            "the stored latency table %s no longer predicts this machine: on %d fresh networks the learned model is "
            "off by %.1f%% on average (tolerance %.0f%%), measured/predicted %.2f. Recalibrate it with `python -m "
            "hwnas_darts.lut build --lut %s --recalibrate`, rebuild it with `python -m hwnas_darts.lut build --out "
            "NEW.json`, or set hardware.on_check_fail=recalibrate", where, val["n"], check["learned_mape_pct"],
            hw.check_tolerance, check["median_ratio"], where)
        check["action"] = "warned"
    return check
