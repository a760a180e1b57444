"""hwnas_darts: hardware-aware differentiable neural architecture search.

The public Python API (see the README): :func:`load_config`, :class:`SearchSpace`,
:class:`Arch`, :func:`build_network`, :class:`LatencyTable`, :class:`LatencyModel`.
Command-line entry points: ``python -m hwnas_darts.fit``, ``.lut``, ``.predict``, ``.profile``.
"""

from __future__ import annotations

from .config import Config, load_config
from .errors import HwnasError
from .hardware.table import LatencyTable
from .hardware.model import LatencyModel
from .network import build_network
from .space.arch import Arch, Scale
from .space.space import SearchSpace

__version__ = "0.1.0"

__all__ = [
    "Config",
    "load_config",
    "HwnasError",
    "LatencyTable",
    "LatencyModel",
    "build_network",
    "Arch",
    "Scale",
    "SearchSpace",
    "__version__",
]
