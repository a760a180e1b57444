"""Lightning checkpoint I/O that writes atomically (temp file + fsync + rename), and the random
number generators' state a checkpoint keeps so a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_path

__all__ = ["AtomicCheckpointIO", "rng_state", "set_rng_state"]

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


def rng_state() -> dict[str, Any]:
    """RNG states in types a ``weights_only`` checkpoint load accepts (tensors, ints, tuples)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
