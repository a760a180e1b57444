"""Experiment tracking: W&B (online / offline / disabled), CSV, or none.

One tracker per pipeline run. With ``logger.kind: wandb`` the search and the retraining log
into *one* W&B run (metrics prefixed ``search/`` and ``retrain/``), which also receives the
resolved config, the per-epoch alpha distribution as a ``wandb.Table`` in long format
(epoch, layer, op, probability) with a heatmap image, the final metrics in its summary and the
run's files as artifacts. ``mode: auto`` goes online when the user is logged in (or
``WANDB_API_KEY`` is set) and offline otherwise; an offline run is uploaded later with
``wandb sync``. ``wandb`` is imported only when this logger is chosen.
"""

from __future__ import annotations

import logging
import netrc
import uuid
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from ._pl import pl
from .config import Config, config_to_dict

__all__ = ["Tracker", "make_tracker", "TrackingCallback", "wandb_mode", "read_offline_records", "read_offline_summary"]

_logger = logging.getLogger(__name__)


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
        auth = netrc.netrc(path).authenticators("api.wandb.ai")
        return bool(auth and auth[2])
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(mode: str) -> str:
    """Resolve ``auto`` to ``online`` (logged in) or ``offline``; ``WANDB_MODE`` wins when set."""
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    if mode != "auto":
        return mode
    return "online" if _wandb_logged_in() else "offline"


class Tracker:
    """No-op tracker (``logger.kind: none``); the base of the others."""

    kind = "none"

    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)

    def lightning_logger(self, stage: str) -> Any:
        return False

    def log_config(self) -> None: ...

    def log_alphas(self, epoch: int, alphas: dict[str, dict[str, float]], heatmap: Path | None = None) -> None: ...

    def log_image(self, key: str, path: Path) -> None: ...

    def summary(self, metrics: dict[str, Any]) -> None: ...

    def artifacts(self, paths: Iterable[Path]) -> None: ...

    def finish(self, ok: bool = True) -> None: ...

    def state(self) -> dict[str, Any]:
        return {}


class CSVTracker(Tracker):
    """Lightning CSV logs under ``RUN_DIR/logs/<stage>/``."""

    kind = "csv"

    def lightning_logger(self, stage: str) -> Any:
        from ._pl import pl as _pl

        return _pl.loggers.CSVLogger(save_dir=str(self.run_dir / "logs"), name=stage, version="")


class WandbTracker(Tracker):
    """One W&B run for the whole pipeline, shared by both stages' Lightning trainers."""

    kind = "wandb"

    def __init__(self, cfg: Config, run_dir: Path, run_id: str | None = None):
        super().__init__(cfg, run_dir)
        import wandb  # imported only when W&B tracking is chosen

        self.wandb = wandb
        self.mode = wandb_mode(cfg.logger.mode)
        self.run_id = run_id or uuid.uuid4().hex[:8]
        from ._pl import pl as _pl

        # the run is started here and handed to Lightning's logger (which would otherwise pass
        # wandb.init an `anonymous` argument that recent wandb versions warn about)
        self.run = wandb.init(
            project=cfg.logger.project, entity=cfg.logger.entity, name=cfg.name, id=self.run_id,
            dir=str(self.run_dir), mode=self.mode, resume="allow", tags=list(cfg.logger.tags) or None,
            job_type="nas", settings=wandb.Settings(silent=True, console="off"))
        self.logger = _pl.loggers.WandbLogger(experiment=self.run, save_dir=str(self.run_dir))
        for prefix in ("search", "retrain"):
            try:
                self.run.define_metric(f"{prefix}/*", step_metric="trainer/global_step")
            except Exception:  # noqa: BLE001 - define_metric is best effort (disabled mode)
                pass

    def lightning_logger(self, stage: str) -> Any:
        return self.logger

    def log_config(self) -> None:
        self.run.config.update(config_to_dict(self.cfg), allow_val_change=True)

    def log_alphas(self, epoch: int, alphas: dict[str, dict[str, float]], heatmap: Path | None = None) -> None:
        rows = [[epoch, layer, op, float(p)] for layer, probs in alphas.items() for op, p in probs.items()]
        data: dict[str, Any] = {"search/alpha_table": self.wandb.Table(columns=["epoch", "layer", "op", "probability"], data=rows),
                                "search/alpha_epoch": epoch}
        if heatmap is not None and Path(heatmap).is_file():
            data["search/alpha_heatmap"] = self.wandb.Image(str(heatmap))
        self.run.log(data)

    def log_image(self, key: str, path: Path) -> None:
        if Path(path).is_file():
            self.run.log({key: self.wandb.Image(str(path))})

    def summary(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                self.run.summary[k] = v

    def artifacts(self, paths: Iterable[Path]) -> None:
        art = self.wandb.Artifact(name=f"{self.cfg.name}-outputs", type="nas-run",
                                  description="architecture, latency table, exported models and report")
        n = 0
        for p in paths:
            p = Path(p)
            if p.is_file():
                art.add_file(str(p), name=p.name)
                n += 1
        if n:
            self.run.log_artifact(art)

    def finish(self, ok: bool = True) -> None:
        self.run.finish(exit_code=0 if ok else 1)
        if self.mode == "offline":
            _logger.info("W&B run saved offline in %s; upload it with: wandb sync %s", self.run.dir,
                         Path(self.run.dir).parent)

    def state(self) -> dict[str, Any]:
        return {"wandb_run_id": self.run_id}


def make_tracker(cfg: Config, run_dir: Path, state: dict[str, Any] | None = None) -> Tracker:
    """The tracker chosen by ``logger.kind`` (a resumed run continues its W&B run)."""
    kind = cfg.logger.kind
    if kind == "wandb":
        try:
            import wandb  # noqa: F401 - a dependency, but images without it exist
        except ImportError:
            _logger.warning("logger.kind=wandb but wandb is not installed (pip install wandb); logging to CSV "
                            "instead (logger.kind=csv says so without this warning)")
            return CSVTracker(cfg, run_dir)
        return WandbTracker(cfg, run_dir, (state or {}).get("wandb_run_id"))
    if kind == "csv":
        return CSVTracker(cfg, run_dir)
    return Tracker(cfg, run_dir)


class TrackingCallback(pl.Callback):
    """Logs each search epoch's alpha distribution (table + heatmap) to the tracker, on rank 0.

    Lightning calls plain callbacks' ``on_train_epoch_end`` before the module's (where the
    epoch's entry is appended), so every hook logs the entries not yet logged and
    ``on_train_end`` catches the last one.
    """

    def __init__(self, tracker: Tracker, plot_dir: Path | None = None):
        self.tracker, self.plot_dir = tracker, plot_dir
        self.logged_epochs: set[int] = set()

    def _flush(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        for entry in getattr(pl_module, "alpha_history", []):
            if entry["epoch"] in self.logged_epochs:
                continue
            self.logged_epochs.add(entry["epoch"])
            heat = None
            if self.plot_dir is not None and self.tracker.kind == "wandb":
                from .plots import plot_alpha_snapshot

                heat = plot_alpha_snapshot(entry, self.plot_dir / f"alphas_epoch{entry['epoch']}.png")
            self.tracker.log_alphas(entry["epoch"], entry["alphas"], heat)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)


def read_offline_records(path: str | os.PathLike) -> Iterator[Any]:
    """The protobuf ``Record`` messages of a W&B transaction log (``run-ID.wandb``): LevelDB-log
    framing, 32 KiB blocks of (crc, length, type) chunks. Offline, no network."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, block, chunks = 7, 32768, []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        chunks.append(chunk)
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(b"".join(chunks))
            chunks = []
            yield rec


def read_offline_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The summary of the newest offline W&B run under ``RUN_DIR/wandb`` (what ``wandb sync``
    would upload as the run's summary), read locally."""
    import json

    files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no offline W&B run under {run_dir}/wandb")
    summary: dict[str, Any] = {}
    for rec in read_offline_records(files[-1]):
        if rec.WhichOneof("record_type") == "summary":
            summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in rec.summary.update})
    return summary
