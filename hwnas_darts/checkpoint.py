"""Lightning checkpoint I/O that writes atomically (temp file + fsync + rename)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .io import atomic_path

__all__ = ["AtomicCheckpointIO"]

try:
    from pytorch_lightning.plugins.io import TorchCheckpointIO
except ImportError:  # pragma: no cover
    from lightning.pytorch.plugins.io import TorchCheckpointIO  # type: ignore[no-redef]


class AtomicCheckpointIO(TorchCheckpointIO):
    """A process killed while a checkpoint is written leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        with atomic_path(Path(path), suffix=".ckpt") as tmp:
            torch.save(checkpoint, tmp)
