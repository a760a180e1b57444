"""One place that imports Lightning: ``pytorch_lightning`` if installed, else ``lightning.pytorch``.

Mixing the two namespaces in one process breaks isinstance checks inside Lightning, so every
module of the package takes ``pl`` (and the few names it needs) from here.
"""

from __future__ import annotations

try:  # the package's declared dependency
    import pytorch_lightning as pl
    from pytorch_lightning.utilities import CombinedLoader
    from pytorch_lightning.utilities.rank_zero import rank_zero_only
except ImportError:  # pragma: no cover - images that ship only the unified `lightning` package
    import lightning.pytorch as pl  # type: ignore[no-redef]
    from lightning.pytorch.utilities import CombinedLoader  # type: ignore[no-redef]
    from lightning.pytorch.utilities.rank_zero import rank_zero_only  # type: ignore[no-redef]

__all__ = ["pl", "CombinedLoader", "rank_zero_only"]
