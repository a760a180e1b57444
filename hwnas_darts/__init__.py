"""hwnas_darts: hardware-aware differentiable neural architecture search.

The public Python API (see the README): :func:`load_config`, :class:`SearchSpace`,
:class:`Arch`, :func:`build_network`, :class:`LatencyTable`, :class:`LatencyModel`.
Command-line entry points: ``python -m hwnas_darts.fit``, ``.lut``, ``.predict``, ``.profile``.

The names are imported on first use, so a command that needs no torch (``fit --print_config``,
a config error) answers without the seconds torch takes to import.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": ".config", "load_config": ".config", "HwnasError": ".errors", "LatencyTable": ".hardware.table",
    "LatencyModel": ".hardware.model", "build_network": ".network", "Arch": ".space.arch", "Scale": ".space.arch",
    "SearchSpace": ".space.space",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hwnas_darts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
