"""``python -m hwnas_darts.fit``: the whole pipeline from one command.

Stages (each recorded in ``RUN_DIR/state.json`` when done, so ``--resume RUN_DIR`` skips it):

1. ``lut``      latency table for the target device (loaded or measured), roofline, calibration
2. ``search``   bi-level differentiable search (Lightning; end-of-epoch checkpoints)
3. ``derive``   candidates, measured on the device, scored; the best one is chosen
4. ``scale``    optional compound scaling of the chosen architecture
5. ``retrain``  the final network from scratch (Lightning; checkpoints), then the test split
6. ``profile``  latency (measured and predicted), MACs, bytes, I, E, memory, per layer
7. ``export``   TorchScript, torch.export (and ONNX), each verified in a fresh process
8. ``report``   metrics.json, report.md with plots, tracker summary and artifacts

Usage::

    python -m hwnas_darts.fit [--config FILE] [--out DIR] [--seed N] [key.sub=value ...]
    python -m hwnas_darts.fit --resume runs/NAME
    python -m hwnas_darts.fit --print_config [--config FILE] [overrides]

Under DDP (``trainer.devices > 1`` or several nodes) every process runs this command; rank 0
does the single-process stages and writes every file, the other ranks take part in the two
training stages and wait for rank 0's files in between (so a shared file system is needed
across nodes).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from .cli import run_cli, setup_logging
from .config import Config, apply_overrides, config_from_dict, config_to_yaml, default_config_path, read_yaml
from .errors import ConfigError, HwnasError, RunDirError
from .io import atomic_write_json, atomic_write_text, check_output_dir, read_json

__all__ = ["main", "Pipeline", "STAGES", "parse_args"]

_logger = logging.getLogger("hwnas_darts.fit")

STAGES = ("lut", "search", "derive", "scale", "retrain", "profile", "export", "report")
STATE_VERSION = 1
CONTRACT_KEYS = ("test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "flops", "params", "bytes",
                 "intensity", "efficiency", "score", "search_seconds", "retrain_seconds", "device")


def _rank() -> int:
    """This process's global rank: RANK (torchrun) or SLURM_PROCID, else Lightning's LOCAL_RANK/NODE_RANK."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", "0") or 0)
    return local if node == 0 else node * 1000 + local  # only "is it 0" matters


# --------------------------------------------------------------------------------------------
# Arguments and configuration
# --------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(
        prog="python -m hwnas_darts.fit",
        description="Hardware-aware differentiable NAS: search, derive, retrain, profile and export in one run.",
        epilog="Overrides: dotted key=value pairs (YAML values), e.g. search.epochs=2 data.dataset=digits "
               "space.stages.0.width=32; also accepted as --search.epochs=2.",
    )
    ap.add_argument("--config", help="YAML config (default: configs/fashion_mnist.yaml)")
    ap.add_argument("--out", help="run directory (default: runs/<name>)")
    ap.add_argument("--seed", type=int, help="seed for the data split, initialisation and sampling")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    ap.add_argument("--deterministic", action="store_true", help="deterministic algorithms (for GPU reproducibility)")
    ap.add_argument("--arch", help="skip the search: retrain, profile and export this architecture "
                                   "(compact string or arch.json of the same space)")
    ap.add_argument("--print_config", "--print-config", action="store_true", help="print the resolved config and exit")
    args, rest = ap.parse_known_args(argv)
    overrides = []
    for item in rest:
        if "=" in item and not item.startswith("-"):
            overrides.append(item)
        elif item.startswith("--") and "=" in item and "." in item.split("=", 1)[0]:
            overrides.append(item[2:])
        elif item.startswith("--") and "=" in item and item[2:].split("=", 1)[0] in Config.__dataclass_fields__:
            overrides.append(item[2:])
        else:
            ap.error(f"unrecognised argument {item!r}; overrides look like search.epochs=2")
    return args, overrides


def resolve_config(args: argparse.Namespace, overrides: list[str]) -> Config:
    path = args.config or default_config_path()
    data = read_yaml(path) if path else {}
    extra = list(overrides)
    if args.seed is not None:
        extra.append(f"seed={args.seed}")
    if args.out:
        extra.append(f"out={args.out}")
    if args.deterministic:
        extra.append("trainer.deterministic=true")
    data = apply_overrides(data, extra)
    return config_from_dict(data)


# --------------------------------------------------------------------------------------------
# Run state
# --------------------------------------------------------------------------------------------
#: largest relative latency noise that derive treats as a tie band (beyond it the machine was busy)
MAX_TIE_NOISE = 0.10


class RunState:
    """``state.json``: which stages are done, their timings and small results."""

    def __init__(self, run_dir: Path, data: dict[str, Any] | None = None):
        self.run_dir = run_dir
        self.data = data or {"version": STATE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": {}}

    @property
    def path(self) -> Path:
        return self.run_dir / "state.json"

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        try:
            data = read_json(run_dir / "state.json", "run state")
        except (FileNotFoundError, ValueError) as exc:
            raise RunDirError(f"{run_dir} cannot be resumed: {exc}") from exc
        if data.get("version") != STATE_VERSION:
            raise RunDirError(f"{run_dir}/state.json has version {data.get('version')}, expected {STATE_VERSION}")
        return cls(run_dir, data)

    def done(self, stage: str) -> bool:
        return bool(self.data["stages"].get(stage, {}).get("done"))

    def get(self, stage: str, key: str, default: Any = None) -> Any:
        return self.data["stages"].get(stage, {}).get(key, default)

    def mark(self, stage: str, seconds: float, **info: Any) -> None:
        self.data["stages"][stage] = {"done": True, "seconds": round(seconds, 3), **info}
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------
class Pipeline:
    """Runs the stages for one config into one run directory (see the module docstring)."""

    def __init__(self, cfg: Config, run_dir: Path, state: RunState, resumed: bool = False, fixed_arch: str | None = None):
        self.cfg, self.run_dir, self.state, self.resumed = cfg, Path(run_dir), state, resumed
        self.fixed_arch = fixed_arch or state.data.get("fixed_arch")
        self.rank = _rank()
        self.leader = self.rank == 0
        self.ctx: dict[str, Any] = {"name": cfg.name}
        self.tracker = None

    # -- helpers -----------------------------------------------------------------------------------
    def _wait_for(self, stage: str, timeout: float = 4 * 3600) -> None:
        """Non-zero ranks wait until rank 0 has finished ``stage``."""
        t0 = time.monotonic()
        while True:
            try:
                st = RunState.load(self.run_dir)
                if st.done(stage):
                    self.state = st
                    return
            except RunDirError:
                pass
            if time.monotonic() - t0 > timeout:
                raise HwnasError(f"rank {self.rank}: timed out waiting for rank 0 to finish stage {stage!r}")
            time.sleep(0.5)

    def _path(self, name: str) -> Path:
        return self.run_dir / name

    def _seed(self, offset: int = 0) -> None:
        from ._pl import pl

        pl.seed_everything(self.cfg.seed + offset, workers=True, verbose=False)

    def _callbacks(self, stage: str) -> list:
        from ._pl import pl

        # every epoch: a rolling "epoch=N.ckpt" (top_k=1 without a monitor keeps only the newest) and a
        # copy "last.ckpt" that --resume uses; both written atomically by AtomicCheckpointIO
        cbs: list = [pl.callbacks.ModelCheckpoint(dirpath=str(self._path(f"checkpoints/{stage}")), filename="{epoch}",
                                                  save_last=True, save_top_k=1, every_n_epochs=1,
                                                  save_on_train_epoch_end=True, enable_version_counter=False)]
        if self.cfg.trainer.progress:
            cbs.append(pl.callbacks.RichProgressBar(leave=True))
        return cbs

    def _trainer(self, stage: str, max_epochs: int, limit_batches: int | None, extra_callbacks: list | None = None,
                 limit_val_batches: int | float | None = 0):
        from ._pl import pl
        from .checkpoint import AtomicCheckpointIO

        t = self.cfg.trainer
        strategy: Any = t.strategy
        if strategy in ("ddp", "ddp_find_unused_parameters_true") and stage == "search":
            strategy = pl.strategies.DDPStrategy(find_unused_parameters=True)
        elif strategy == "ddp":
            strategy = pl.strategies.DDPStrategy()
        logger = self.tracker.lightning_logger(stage) if self.tracker is not None else False
        kwargs: dict[str, Any] = dict(
            accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
            precision=t.precision, max_epochs=max_epochs, logger=logger,
            callbacks=self._callbacks(stage) + list(extra_callbacks or []), enable_progress_bar=t.progress,
            enable_model_summary=False, num_sanity_val_steps=0, deterministic=t.deterministic or None,
            default_root_dir=str(self.run_dir), plugins=[AtomicCheckpointIO()], log_every_n_steps=10,
            limit_val_batches=limit_val_batches,
        )
        if limit_batches:
            kwargs["limit_train_batches"] = limit_batches
        return pl.Trainer(**kwargs)

    def _last_ckpt(self, stage: str) -> str | None:
        p = self._path(f"checkpoints/{stage}/last.ckpt")
        return str(p) if p.is_file() else None

    # -- stages --------------------------------------------------------------------------------------
    def setup(self) -> None:
        from .hardware.measure import MeasureSettings
        from .space.space import SearchSpace

        from .hardware.measure import tune_allocator

        tune_allocator()  # the allocator regime the latency table describes (and faster CPU training)
        self.space = SearchSpace.from_config(self.cfg)
        self.settings = MeasureSettings.from_config(self.cfg.hardware)
        self.ctx["config_yaml"] = config_to_yaml(self.cfg)
        if self.leader:
            from .tracking import make_tracker

            self.tracker = make_tracker(self.cfg, self.run_dir, self.state.data.get("tracker"))
            self.state.data["tracker"] = self.tracker.state()
            self.state.save()
            if not self.resumed:
                self.tracker.log_config()
        _logger.info("space %s: %d searchable layers, %s architectures; run directory %s", self.space.space_id,
                     len(self.space), f"{self.space.size:.3g}", self.run_dir)

    def stage_lut(self) -> None:
        from .hardware.lut import LatencyTable
        from .lut import _rich_progress, obtain_table, progress_callback

        if self.state.done("lut"):
            self.table = LatencyTable.load(self._path("lut.json"))
            return
        t0 = time.perf_counter()
        with _rich_progress() as prog:
            table, source = obtain_table(self.cfg, self.space, self.settings, progress_callback(prog))
        check = self._check_table(table, source)
        table.save(self._path("lut.json"))
        self.table = table
        val = table.validation or {}
        info = {"source": source, "rows": len(table)}
        if check is not None:
            info["check"] = check
        if val.get("learned"):
            info["spearman"] = val["learned"]["spearman"]
            info["mape_pct"] = val["learned"]["mape_pct"]
        self.state.mark("lut", time.perf_counter() - t0, **info)
        _logger.info("latency table: %s (%d rows)%s", source, len(table),
                     f"; learned model on {val['n']} held-out networks: Spearman {val['learned']['spearman']:.3f}, "
                     f"MAPE {val['learned']['mape_pct']:.1f}%" if val.get("learned") else "")

    def _check_table(self, table, source: str) -> dict[str, Any] | None:
        """Measure a few fresh networks against a stored table's model; warn or recalibrate when it
        no longer predicts this machine. Returns the check's summary (None when skipped)."""
        from .hardware.model import LatencyModel, calibrate_and_validate, check_table

        hw = self.cfg.hardware
        if (not source.startswith("loaded") or hw.check_archs < 3 or not table.calibration
                or table.mismatches(self.settings.record())):
            return None
        val = check_table(LatencyModel(table, self.space), self.space, self.settings, hw.check_archs,
                          seed=self.cfg.seed * 7919 + 101, tolerance_pct=hw.check_tolerance)
        rep = val.get("repeatability") or {}
        summary = {"n": val["n"], "ok": val["ok"], "median_ratio": val["median_ratio"],
                   "learned_mape_pct": val["learned"]["mape_pct"], "learned_max_err_pct": val["learned"]["max_err_pct"],
                   "learned_spearman": val["learned"]["spearman"], "table_sum_mape_pct": val["table_sum"]["mape_pct"],
                   "noise_pct": rep.get("noise_pct"), "tolerance_pct": hw.check_tolerance, "seconds": val["seconds"],
                   "action": "none"}
        _logger.info("latency table check on %d fresh networks: learned model MAPE %.1f%% (max %.1f%%), measured/predicted "
                     "%.3f, measurement noise about %s", val["n"], summary["learned_mape_pct"],
                     summary["learned_max_err_pct"], summary["median_ratio"],
                     f"{rep['noise_pct']:.1f}%" if rep else "n/a")
        if not val["ok"]:
            where = table.path or "the table"
            if hw.on_check_fail == "recalibrate":
                _logger.warning("the stored latency table no longer predicts this machine (MAPE %.1f%%, measured/predicted "
                                "%.2f); refitting its calibration on fresh networks", summary["learned_mape_pct"],
                                summary["median_ratio"])
                table.calibration = None
                calibrate_and_validate(table, self.space, self.settings, max(hw.calibration_archs, 3),
                                       hw.validation_archs, seed=self.cfg.seed + 1)
                summary["action"] = "recalibrated"
            else:
                _logger.warning(
                    "the stored latency table %s no longer predicts this machine: on %d fresh networks the learned model is "
                    "off by %.1f%% on average (tolerance %.0f%%), measured/predicted %.2f. Recalibrate it with `python -m "
                    "hwnas_darts.lut build --lut %s --recalibrate`, rebuild it with `python -m hwnas_darts.lut build --out "
                    "NEW.json`, or set hardware.on_check_fail=recalibrate", where, val["n"], summary["learned_mape_pct"],
                    hw.check_tolerance, summary["median_ratio"], where)
                summary["action"] = "warned"
        self.ctx["lut_check"] = {**summary, "archs": val["archs"], "measured_ms": val["measured_ms"],
                                 "predicted_ms": val["predicted_ms"], "predicted_raw_ms": val["predicted_raw_ms"]}
        return summary

    def _objective(self):
        from .hardware.model import LatencyModel
        from .objective import HardwareObjective, Targets, resolve_targets

        self.model = LatencyModel(self.table, self.space)
        saved = self.state.data.get("targets")
        if saved:
            self.targets = Targets(**saved)
        else:
            self.targets = resolve_targets(self.cfg.objective, self.model, self.space, seed=self.cfg.seed)
            if self.leader:
                self.state.data["targets"] = self.targets.to_dict()
                self.state.save()
        return HardwareObjective(self.cfg.objective, self.model, self.targets)

    def _search_module(self, objective):
        from .search import SearchModule

        self._seed()
        return SearchModule(self.space, self.cfg.search, objective, channels_last=self.cfg.trainer.channels_last)

    def stage_search(self) -> None:
        from .data import HwnasDataModule
        from .tracking import TrackingCallback

        objective = self._objective()
        if self.fixed_arch:
            self.module = None
            if self.leader and not self.state.done("search"):
                self.state.mark("search", 0.0, skipped=f"architecture given: {self.fixed_arch}")
            return
        if self.state.done("search"):
            self.module = self._load_search_module(objective)
            return
        t0 = time.perf_counter()
        module = self._search_module(objective)
        dm = HwnasDataModule(self.cfg.data, self.cfg.seed, mode="search")
        if self.cfg.search.epochs > 0:
            cbs = [TrackingCallback(self.tracker, self._path("plots"))] if self.tracker is not None else []
            trainer = self._trainer("search", self.cfg.search.epochs, self.cfg.search.steps_per_epoch, cbs)
            trainer.fit(module, datamodule=dm, ckpt_path=self._last_ckpt("search"))
            if os.environ.get("HWNAS_DUMP_RANK_ALPHAS"):
                import torch

                dump = self._path(f"debug/alphas_rank{trainer.global_rank}.pt")
                dump.parent.mkdir(parents=True, exist_ok=True)
                torch.save([a.detach().cpu() for a in module.supernet.arch_parameters()], dump)
        self.module = module
        if not self.leader:
            return
        self._save_alphas(module)
        if self.cfg.search.epochs == 0:
            import torch

            from .io import atomic_path

            with atomic_path(self._path("checkpoints/search/last.ckpt")) as tmp:
                torch.save({"state_dict": module.state_dict(), "alpha_history": []}, tmp)
        # the time spent searching, including the part before an interruption (carried in the checkpoint)
        seconds = module.elapsed_seconds if self.cfg.search.epochs > 0 else time.perf_counter() - t0
        self.state.mark("search", seconds, epochs=self.cfg.search.epochs, argmax=module.supernet.derive().to_string())

    def _load_search_module(self, objective):
        import torch

        module = self._search_module(objective)
        ckpt = self._last_ckpt("search")
        if ckpt is None:
            raise RunDirError(f"stage 'search' is marked done but {self.run_dir}/checkpoints/search/last.ckpt is missing")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
        module.alpha_history = list(state.get("alpha_history", []))
        return module

    def _save_alphas(self, module) -> None:
        sn = module.supernet
        atomic_write_json(self._path("alphas.json"), {
            "space_id": self.space.space_id,
            "relaxation": self.cfg.search.relaxation,
            "final": sn.alphas_dict(),
            "logits": {m.name: m.alpha.detach().cpu().tolist() for m in sn.mixed},
            "argmax": sn.derive().to_string(),
            "history": module.alpha_history,
        })

    def stage_derive(self) -> None:

        from .data import HwnasDataModule
        from .derive import (evaluate_accuracy, finetune_subnet, propose_candidates, score_candidates,
                             select_best, skip_share)
        from .hardware.model import measure_arch_timings, measurement_noise
        from .space.arch import Arch

        if self.fixed_arch:
            return self._derive_fixed()
        self.ctx["alpha_history"] = self.module.alpha_history
        sn = self.module.supernet.to(self._compute_device())
        self.ctx["skip_share"] = skip_share(sn)
        if self.state.done("derive"):
            self.chosen = Arch.load(self._path("arch_searched.json"))
            self.ctx["candidates"] = read_json(self._path("candidates.json"))["candidates"]
            return
        t0 = time.perf_counter()
        dc = self.cfg.derive
        cands = propose_candidates(sn, dc, self.cfg.seed, self.model, self.targets)
        dm = HwnasDataModule(self.cfg.data, self.cfg.seed, mode="search")
        dm.setup()
        loader = dm.archval_dataloader()
        from .data import make_loader

        calib = make_loader(dm.weight_dataset(augment=False), 256, True, self.cfg.seed + 11)
        _logger.info("scoring %d candidate architectures", len(cands))
        for c in cands:
            net = sn
            if dc.finetune_steps:
                net = finetune_subnet(sn, c.arch, make_loader(dm.weight_dataset(), dm.cfg.batch_size, True, self.cfg.seed + 7),
                                      dc.finetune_steps, self.cfg.search.weight_lr, device=self._compute_device())
            c.val_accuracy = evaluate_accuracy(net, c.arch, loader, dc.eval_batches, device=self._compute_device(),
                                               calib_loader=calib if dc.bn_batches else None, calib_batches=dc.bn_batches)
        sn.cpu()
        noise = 0.0
        if dc.measure:
            timings = measure_arch_timings(self.space, [c.arch for c in cands], self.settings, self.table)
            meas = [t.median_ms for t in timings]
            noise = max(dc.noise_floor, measurement_noise(timings))
            if noise > MAX_TIE_NOISE:
                _logger.warning("the candidates' latency measurement disagrees with itself by about %.0f%%: "
                                "the machine was busy. Close calls within +-%.0f%% go to the predicted latency",
                                100 * noise, 100 * MAX_TIE_NOISE)
                noise = MAX_TIE_NOISE
            for c, t in zip(cands, timings):
                c.extra["latency_halves_ms"] = list(t.half_medians_ms) if t.half_medians_ms else None
                if t.process_medians_ms:
                    c.extra["latency_processes_ms"] = list(t.process_medians_ms)
        else:
            meas = [self.model.predict(c.arch) for c in cands]
        roof = self.table.roofline
        for c, lat in zip(cands, meas):
            counts = self.model.counts(c.arch)
            c.latency_ms = float(lat)
            c.latency_ms_predicted = self.model.predict(c.arch)
            c.macs, c.bytes, c.intensity = counts["macs"], counts["bytes"], counts["intensity"]
            c.efficiency = roof.efficiency(c.macs, c.bytes, c.latency_ms) if roof else 0.0
            c.extra["latency_source"] = "measured" if dc.measure else "predicted"
        score_candidates(cands, self.cfg.objective, self.targets)
        best = select_best(cands, noise, self.cfg.objective, self.targets)
        self.chosen = best.arch
        cand_dicts = [c.to_dict() for c in cands]
        self.ctx["candidates"] = cand_dicts
        atomic_write_json(self._path("candidates.json"), {"targets": self.targets.to_dict(), "candidates": cand_dicts,
                                                          "skip_share": self.ctx["skip_share"],
                                                          "latency_noise": noise})
        best.arch.save(self._path("arch_searched.json"))
        if self.ctx["skip_share"].get("collapsed"):
            _logger.warning("architecture collapse: skip connections dominate the distribution (%s); consider "
                            "derive.max_skips", self.ctx["skip_share"])
        self.state.mark("derive", time.perf_counter() - t0, chosen=best.arch.to_string(), candidates=len(cands),
                        latency_noise=noise, tie=bool(best.extra.get("tie")))
        _logger.info("chosen: %s (val acc %.4f, %.3f ms measured, score %.4f)", best.arch, best.val_accuracy,
                     best.latency_ms, best.score)

    def _derive_fixed(self) -> None:
        """``--arch``: no search; the given architecture is measured and goes on to retraining."""
        from .derive import Candidate
        from .hardware.model import measure_archs
        from .space.arch import Arch

        if self.state.done("derive"):
            self.chosen = Arch.load(self._path("arch_searched.json"))
            self.ctx["candidates"] = read_json(self._path("candidates.json"))["candidates"]
            return
        t0 = time.perf_counter()
        text = self.fixed_arch
        arch = Arch.load(text) if text.endswith(".json") else Arch.from_string(text)
        arch = self.space.validate(Arch(arch.ops, arch.scale, None))
        c = Candidate(arch, ["given"], 0.0)
        c.latency_ms = measure_archs(self.space, [arch], self.settings, self.table)[0]
        c.latency_ms_predicted = self.model.predict(arch)
        counts = self.model.counts(arch)
        c.macs, c.bytes, c.intensity = counts["macs"], counts["bytes"], counts["intensity"]
        roof = self.table.roofline
        c.efficiency = roof.efficiency(c.macs, c.bytes, c.latency_ms) if roof else 0.0
        c.chosen = True
        self.chosen = arch.with_scale(type(arch.scale)())
        self.ctx["candidates"] = [c.to_dict()]
        atomic_write_json(self._path("candidates.json"), {"targets": self.targets.to_dict(), "candidates": [c.to_dict()]})
        self.chosen.save(self._path("arch_searched.json"))
        self.state.mark("derive", time.perf_counter() - t0, chosen=arch.to_string(), given=True)

    def stage_scale(self) -> None:
        from .hardware.lut import build_table
        from .space.arch import Arch, Scale

        if self.state.done("scale"):
            self.arch = Arch.load(self._path("arch.json"))
            self.table = type(self.table).load(self._path("lut.json"))
            return
        t0 = time.perf_counter()
        sc = self.cfg.scale
        arch = self.chosen
        if sc.enabled:
            scale = Scale(width=sc.width if sc.width is not None else sc.width_coef ** sc.phi,
                          depth=sc.depth if sc.depth is not None else sc.depth_coef ** sc.phi,
                          resolution=sc.resolution if sc.resolution is not None else sc.resolution_coef ** sc.phi)
            arch = arch.with_scale(scale)
            keys = [p.key for p in self.space.plan(arch)]
            if self.table.missing(keys) and not self.table.mismatches(self.settings.record()):
                _logger.info("measuring %d latency-table rows of the scaled network", len(self.table.missing(keys)))
                self.table = build_table(None, self.settings, self.table, keys=keys)
                self.table.save(self._path("lut.json"))
            _logger.info("compound scaling %s: %s", scale, arch)
        arch.save(self._path("arch.json"))
        self.arch = arch
        self.state.mark("scale", time.perf_counter() - t0, arch=arch.to_string(), scaled=sc.enabled)

    def _input_size(self) -> int:
        return self.space.plan(self.arch)[0].h

    def stage_retrain(self) -> None:
        import torch

        from .data import HwnasDataModule
        from .network import build_network
        from .space.arch import Arch
        from .train import RetrainModule

        if not self.leader:
            self.arch = Arch.load(self._path("arch.json"))
        size = self._input_size()
        self._seed(1)
        net = build_network(self.space, self.arch)
        self.net = net
        if self.state.done("retrain"):
            net.load_state_dict(torch.load(self._path("model_state.pt"), map_location="cpu", weights_only=True))
            self.ctx["retrain_history"] = self.state.get("retrain", "history", [])
            self.dm = HwnasDataModule(self.cfg.data, self.cfg.seed, mode="retrain", image_size=size)
            self.dm.setup()
            return
        dm = HwnasDataModule(self.cfg.data, self.cfg.seed, mode="retrain", full_train=self.cfg.retrain.full_train,
                             image_size=size if size != self.space.image_size else None)
        module = RetrainModule(net, self.cfg.retrain, self.space.num_classes, self.cfg.trainer.channels_last)
        val_batches = 0 if self.cfg.retrain.full_train else None
        trainer = self._trainer("retrain", self.cfg.retrain.epochs, self.cfg.retrain.steps_per_epoch,
                                limit_val_batches=val_batches)
        dm.setup()
        val_loader = None if self.cfg.retrain.full_train else dm.archval_dataloader()
        with warnings.catch_warnings():
            # full_train retrains on every training image: no validation split exists, as intended
            warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
            trainer.fit(module, train_dataloaders=dm.train_dataloader(), val_dataloaders=val_loader,
                        ckpt_path=self._last_ckpt("retrain"))
        self.dm = dm
        if not self.leader:
            return
        from .io import atomic_path

        acc = self._test_accuracy(module.network.to(self._compute_device()), dm)
        net = module.network.cpu().float().eval()
        self.net = net
        with atomic_path(self._path("model_state.pt")) as tmp:
            torch.save(net.state_dict(), tmp)
        self.ctx["retrain_history"] = module.history
        self.state.mark("retrain", module.elapsed_seconds, test_accuracy=acc, epochs=self.cfg.retrain.epochs,
                        history=module.history)
        _logger.info("test accuracy of the retrained network: %.4f", acc)

    def _compute_device(self):
        """Where candidate evaluation and testing run: the training accelerator when it is a GPU."""
        import torch

        acc = self.cfg.trainer.accelerator
        if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    @staticmethod
    def _test_accuracy(net, dm) -> float:
        """Top-1 accuracy on the whole official test split (every image exactly once)."""
        import torch

        correct = total = 0
        net.eval()
        device = next(net.parameters()).device
        with torch.inference_mode():
            for x, y in dm.test_dataloader():
                correct += int((net(x.to(device)).argmax(1).cpu() == y).sum())
                total += len(y)
        return correct / max(total, 1)

    def stage_profile(self) -> None:
        from .profile import profile_network

        if self.state.done("profile"):
            self.profile = read_json(self._path("profile.json"))
            self.ctx["profile"] = self.profile
            return
        t0 = time.perf_counter()
        try:
            pred = self.model.predict(self.arch)
        except HwnasError as exc:
            _logger.warning("no latency prediction for the final network: %s", exc)
            pred = None
        shape = (self.space.in_channels, self._input_size(), self._input_size())
        prof = profile_network(self.net, shape, self.settings, self.table, pred)
        if pred is not None:
            # the figure set beside the prediction is measured as the table's networks were:
            # anchored to its calibration networks, in hardware.processes fresh processes (this
            # process's heap, grown by training, reads a few percent apart from a fresh one)
            from .hardware.model import measure_arch_timings

            info: dict = {}
            t = measure_arch_timings(self.space, [self.arch], self.settings, self.table, info=info)[0]
            prof.update(latency_ms_in_process=prof["latency_ms"], latency_ms=t.median_ms,
                        latency_ms_processes=t.process_medians_ms, latency_anchor_factor=info.get("anchor_factor"),
                        throughput_per_s=self.settings.batch_size / (t.median_ms / 1e3))
        prof["arch"] = self.arch.to_string()
        atomic_write_json(self._path("profile.json"), prof)
        self.profile = prof
        self.ctx["profile"] = prof
        self.state.mark("profile", time.perf_counter() - t0)

    def stage_export(self) -> None:
        from .export import export_all

        if self.state.done("export"):
            self.ctx["exports"] = self.state.get("export", "results", [])
            return
        t0 = time.perf_counter()
        mean, std = self.dm.normalization
        info = self.dm.info
        size = self._input_size()
        meta = {"arch": self.arch.to_string(), "space_id": self.space.space_id, "dataset": info.name,
                "input_shape": [self.space.in_channels, size, size], "mean": list(mean), "std": list(std),
                "class_names": list(info.class_names), "num_classes": self.space.num_classes,
                "params": sum(p.numel() for p in self.net.parameters())}
        e = self.cfg.export
        results = export_all(self.net, self.run_dir, tuple(meta["input_shape"]), meta, e.torchscript, e.program, e.onnx,
                             e.verify_batch, channels_last=self.cfg.hardware.channels_last)
        for r in results:
            if r.ok:
                _logger.info("exported %s: %s (max abs diff %.2g at batch %d, reloaded in a fresh process)", r.kind,
                             r.path, r.max_abs_diff, r.verify_batch)
            else:
                _logger.error("%s export not kept: %s", r.kind, r.reason)
        res = [r.to_dict() for r in results]
        self.ctx["exports"] = res
        self.state.mark("export", time.perf_counter() - t0, results=res)

    def metrics(self) -> dict[str, Any]:
        from .objective import score

        prof = self.profile
        acc = float(self.state.get("retrain", "test_accuracy"))
        cost = prof["macs"] if self.targets.cost == "macs" else prof["latency_ms"]
        eff = prof.get("efficiency") or 0.0
        rec = prof["device"]
        m = {
            "test_accuracy": acc,
            "latency_ms": prof["latency_ms"],
            "latency_ms_predicted": prof.get("latency_ms_predicted"),
            "macs": prof["macs"],
            "flops": prof["flops"],
            "params": prof["params"],
            "bytes": prof["bytes"],
            "intensity": prof["intensity"],
            "efficiency": prof.get("efficiency"),
            "score": score(self.cfg.objective, self.targets, acc, cost, prof["intensity"], eff),
            "search_seconds": self.state.get("search", "seconds"),
            "retrain_seconds": self.state.get("retrain", "seconds"),
            "device": f"{rec['kind']}: {rec['name']}",
            "device_record": rec,
            "batch_size": prof["batch_size"],
            "latency_ms_raw": prof.get("latency_ms_raw"),
            "latency_ms_in_process": prof.get("latency_ms_in_process"),
            "latency_ms_p90": prof.get("latency_ms_p90"),
            "latency_ms_batch1": prof.get("latency_ms_batch1"),
            "peak_bytes": prof.get("peak_bytes"),
            "arch": self.arch.to_string(),
            "arch_searched": self.chosen.to_string(),
            "space_id": self.space.space_id,
            "seed": self.cfg.seed,
            "targets": self.targets.to_dict(),
            "lut_seconds": self.state.get("lut", "seconds"),
            "derive_seconds": self.state.get("derive", "seconds"),
        }
        val = (self.table.validation or {})
        if val.get("learned"):
            m["latency_model"] = {"spearman": val["learned"]["spearman"], "mape_pct": val["learned"]["mape_pct"],
                                  "max_err_pct": val["learned"].get("max_err_pct"), "n": val["n"],
                                  "noise_pct": (val.get("repeatability") or {}).get("noise_pct"),
                                  "unit": val.get("unit"), "kind": val.get("kind", "stored validation")}
        check = self.state.get("lut", "check")
        if check:
            m["latency_check"] = check  # this run's own check of the table on fresh networks
        if self.targets.cost == "latency" and self.targets.latency:
            m["latency_target_ms"] = self.targets.latency
            m["latency_vs_target"] = prof["latency_ms"] / self.targets.latency
        return m

    def stage_report(self) -> dict[str, Any]:
        from .report import write_report

        t0 = time.perf_counter()
        metrics = self.metrics()
        atomic_write_json(self._path("metrics.json"), metrics)
        self.ctx.update(
            metrics=metrics, arch=self.arch.to_string(), device=self.table.device,
            roofline=self.table.roofline.to_dict() if self.table.roofline else None,
            lut_validation=self.table.validation, targets=self.targets.to_dict(),
            plan=[asdict(p) for p in self.space.plan(self.arch)], stages=self.state.data["stages"],
            search={"relaxation": self.cfg.search.relaxation, "epochs": self.cfg.search.epochs,
                    "warmup_epochs": self.cfg.search.warmup_epochs, "seconds": metrics["search_seconds"]},
            flops_claim=flops_claim(self.ctx.get("candidates") or []),
        )
        write_report(self.run_dir, self.ctx)
        if self.tracker is not None:
            self.tracker.summary({k: v for k, v in metrics.items() if not isinstance(v, dict)})
            for name in ("candidates", "alphas", "lut_validation", "layers", "search_losses"):
                p = self._path(f"plots/{name}.png")
                if p.is_file():
                    self.tracker.log_image(f"report/{name}", p)
            self.tracker.artifacts([self._path(n) for n in ("arch.json", "lut.json", "model.ts", "model.pt2", "model.onnx",
                                                            "report.md", "metrics.json", "candidates.json", "alphas.json")])
        self.state.mark("report", time.perf_counter() - t0)
        return metrics

    def run(self) -> None:
        """Run (or skip, when done) every stage; non-zero ranks only join the two training stages."""
        self.setup()
        ok = False
        try:
            for stage in STAGES:
                if not self.leader:
                    if stage == "lut":
                        from .hardware.lut import LatencyTable

                        self._wait_for("lut")
                        self.table = LatencyTable.load(self._path("lut.json"))
                        continue
                    if stage == "retrain":
                        self._wait_for("scale")
                    elif stage != "search":
                        continue
                getattr(self, f"stage_{stage}")()
            ok = True
        finally:
            if self.tracker is not None:
                self.tracker.finish(ok)


def flops_claim(cands: list[dict[str, Any]]) -> str | None:
    """Did the chosen candidate have more MACs but lower measured latency than the MACs-cheapest one?"""
    if len(cands) < 2:
        return None
    chosen = next((c for c in cands if c.get("chosen")), None)
    cheapest = min(cands, key=lambda c: c["macs"])
    if chosen is None or chosen is cheapest or chosen["arch"] == cheapest["arch"]:
        return "The chosen candidate is also the one with the fewest MACs."
    more_macs = chosen["macs"] > cheapest["macs"]
    faster = chosen["latency_ms"] < cheapest["latency_ms"]
    verdict = ("yes: more MACs, lower measured latency" if more_macs and faster else
               "no" + ("" if more_macs else " (it also has fewer MACs)"))
    return (f"More MACs but faster than the MACs-cheapest candidate? {verdict} - chosen {chosen['macs']:,.0f} MACs at "
            f"{chosen['latency_ms']:.3f} ms vs {cheapest['macs']:,.0f} MACs at {cheapest['latency_ms']:.3f} ms.")


def print_summary(metrics: dict[str, Any], run_dir: Path) -> None:
    from .cli import console
    from rich.table import Table

    t = Table(title=f"hwnas_darts run {run_dir}", show_header=False)

    def f(v, d=4):
        return "-" if v is None else (f"{v:,.{d}g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))

    rows = [("test accuracy", f(metrics["test_accuracy"])),
            ("latency (measured)", f"{f(metrics['latency_ms'])} ms at batch {metrics['batch_size']}"),
            ("latency (predicted)", f"{f(metrics['latency_ms_predicted'])} ms"),
            ("latency batch 1", f"{f(metrics.get('latency_ms_batch1'))} ms"),
            ("MACs / params", f"{f(metrics['macs'])} / {f(metrics['params'])}"),
            ("intensity I", f"{f(metrics['intensity'])} FLOP/B"),
            ("efficiency E", f(metrics["efficiency"])),
            ("score", f(metrics["score"])),
            ("search / retrain", f"{f(metrics['search_seconds'])} s / {f(metrics['retrain_seconds'])} s"),
            ("device", metrics["device"]),
            ("architecture", metrics["arch"]),
            ("files", f"{run_dir}/ (metrics.json, arch.json, model.ts, model.pt2, report.md)")]
    for k, v in rows:
        t.add_row(k, v)
    console().print(t)


def prepare_run_dir(cfg: Config, overwrite: bool) -> Path:
    run_dir = cfg.run_dir()
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"run directory {run_dir} already exists and is not empty; choose another with --out DIR "
                              f"or name=..., continue it with --resume {run_dir}, or replace it with --overwrite")
        if (run_dir / "state.json").is_file() or (run_dir / "config.yaml").is_file():
            shutil.rmtree(run_dir)
        else:
            raise RunDirError(f"{run_dir} is not a hwnas_darts run directory (no state.json); refusing to delete it "
                              "even with --overwrite")
    check_output_dir(run_dir)
    return run_dir


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    setup_logging()

    def run() -> int:
        leader = _rank() == 0
        if args.resume:
            if overrides or args.config:
                raise ConfigError("--resume continues a run with its own config.yaml; drop --config and overrides")
            run_dir = Path(args.resume)
            if not (run_dir / "config.yaml").is_file():
                raise RunDirError(f"{run_dir} is not a run directory (no config.yaml)")
            cfg = config_from_dict(read_yaml(run_dir / "config.yaml"))
            state = RunState.load(run_dir)
            if leader:
                check_output_dir(run_dir)
                for stale in run_dir.rglob(".*.tmp*"):  # temporaries of writes a kill interrupted
                    stale.unlink(missing_ok=True)
            resumed = True
        else:
            cfg = resolve_config(args, overrides)
            if args.print_config:
                print(config_to_yaml(cfg), end="")
                return 0
            run_dir = cfg.run_dir()
            resumed = False
            if leader:
                prepare_run_dir(cfg, args.overwrite)
                atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
                state = RunState(run_dir)
                state.save()
            else:
                state = RunState(run_dir)
            if args.arch:
                state.data["fixed_arch"] = args.arch
                if leader:
                    state.save()
        if cfg.trainer.deterministic:
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)
        pipe = Pipeline(cfg, run_dir, state, resumed, args.arch)
        pipe.run()
        if leader and (run_dir / "metrics.json").is_file():
            print_summary(read_json(run_dir / "metrics.json"), run_dir)
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
