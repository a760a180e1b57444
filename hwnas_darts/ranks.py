"""Ranks of a distributed run, coordinated through the process group (never through files).

Under DDP every process runs ``python -m hwnas_darts.fit``. :func:`start` launches the other
local processes (Lightning Fabric's launcher, the same one the Trainer uses; with ``torchrun`` or
SLURM they already exist) and joins the process group before the first stage, so rank 0 can
hand its results to the others with a broadcast: the latency table and targets before the
search, the chosen architecture before the retraining. No rank reads another's files, so a run
over several nodes needs no shared file system. A rank 0 that fails sends its error instead of
its result; one that dies closes the group, and the others end with a clear error at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .errors import HwnasError

__all__ = ["Ranks", "start"]

_logger = logging.getLogger(__name__)


@dataclass
class Ranks:
    """This process's place in the run and the group it talks to the others through."""

    rank: int = 0
    world: int = 1
    group: Any = None

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def share(self, stage: str, payload: Any = None, error: BaseException | None = None) -> Any:
        """Rank 0 sends ``payload`` (or its ``error``) to every rank; every rank returns it.

        Raises on the other ranks when rank 0 sent an error or left the group."""
        if self.world == 1:
            return payload
        import torch.distributed as dist

        box = [("error", f"{type(error).__name__}: {error}") if error is not None else ("ok", payload)]
        try:
            dist.broadcast_object_list(box, src=0, group=self.group)
        except Exception as exc:  # noqa: BLE001 - gloo reports a dead peer as a RuntimeError
            raise HwnasError(f"rank {self.rank}: lost contact with rank 0 during stage {stage!r} "
                             f"(it ended or timed out): {exc}") from exc
        status, value = box[0]
        if status == "error" and not self.leader:
            raise HwnasError(f"rank {self.rank}: rank 0 failed in stage {stage!r} ({value}); stopping too")
        return value

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=self.group)
        return out


def _fabric_cls():
    try:
        from lightning_fabric import Fabric
        from lightning_fabric.strategies import DDPStrategy
    except ImportError:  # pragma: no cover - the unified `lightning` package
        from lightning.fabric import Fabric  # type: ignore[no-redef]
        from lightning.fabric.strategies import DDPStrategy  # type: ignore[no-redef]
    return Fabric, DDPStrategy


def start(trainer_cfg: Any) -> Ranks:
    """Launch/join the ranks the ``trainer`` section asks for; a single process when it asks for one."""
    import os

    t = trainer_cfg
    one_device = t.devices in (1, "1") or (isinstance(t.devices, list) and len(t.devices) == 1)
    if one_device and t.num_nodes == 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) == 1:
        return Ranks()
    Fabric, DDPStrategy = _fabric_cls()
    timeout = timedelta(minutes=t.sync_timeout_minutes)
    strategy: Any = t.strategy
    if strategy == "auto" or str(strategy).startswith("ddp"):
        strategy = DDPStrategy(timeout=timeout)
    try:
        fabric = Fabric(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise HwnasError(f"trainer section: {exc}") from exc
    if fabric.world_size == 1:
        return Ranks()
    fabric.launch()
    import torch.distributed as dist

    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    _logger.info("rank %d of %d joined the process group", fabric.global_rank, fabric.world_size)
    return Ranks(fabric.global_rank, fabric.world_size, group)
