"""The architecture (genotype) as plain, frozen, versioned data.

An :class:`Arch` is one op name per searchable layer of a :class:`~hwnas_darts.space.SearchSpace`
plus optional compound-scaling multipliers. It round-trips through JSON (``to_dict`` /
``from_dict``, ``save`` / ``load``) and through a compact string::

    arch  := op ("-" op)* ("@" scale)?
    scale := "w" float "," "d" float "," "r" float     (width, depth, resolution multipliers)

e.g. ``s2dconv_n2_relu-mb_k3_e3_swish-skip-fmb_k3_e4_relu@w1.1,d1.2,r1.15``. Op names never
contain ``-`` or ``@`` (see :mod:`hwnas_darts.space.ops`), so the form is unambiguous.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArchError
from ..io import atomic_write_json, read_json
from .ops import parse_op

__all__ = ["Arch", "Scale", "ARCH_SCHEMA_VERSION"]

ARCH_SCHEMA_VERSION = 1
_SCALE_RE = re.compile(r"^w([0-9.]+),d([0-9.]+),r([0-9.]+)$")


@dataclass(frozen=True)
class Scale:
    """Compound-scaling multipliers (1.0 = the searched size)."""

    width: float = 1.0
    depth: float = 1.0
    resolution: float = 1.0

    def __post_init__(self):
        for key in ("width", "depth", "resolution"):
            val = getattr(self, key)
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not val > 0:
                raise ArchError(f"scale.{key} must be a positive number, got {val!r}")
            object.__setattr__(self, key, float(val))

    @property
    def is_identity(self) -> bool:
        return self.width == 1.0 and self.depth == 1.0 and self.resolution == 1.0

    def __str__(self) -> str:
        return f"w{self.width:g},d{self.depth:g},r{self.resolution:g}"


@dataclass(frozen=True)
class Arch:
    """One op per searchable layer, optional scaling, and the id of the space it belongs to."""

    ops: tuple[str, ...]
    scale: Scale = field(default_factory=Scale)
    space_id: str | None = None

    def __post_init__(self):
        if isinstance(self.ops, str):
            raise ArchError("Arch.ops must be a sequence of op names; use Arch.from_string for the string form")
        ops = tuple(self.ops)
        if not ops:
            raise ArchError("an architecture needs at least one op")
        canon = []
        for op in ops:
            try:
                canon.append(parse_op(op).name)
            except Exception as exc:  # SpaceError -> ArchError with context
                raise ArchError(f"invalid op in architecture: {exc}") from exc
        object.__setattr__(self, "ops", tuple(canon))
        if isinstance(self.scale, dict):
            object.__setattr__(self, "scale", Scale(**self.scale))

    # -- string form --------------------------------------------------------------------------
    def to_string(self) -> str:
        """The compact form (see the module docstring); the space id is not part of it."""
        s = "-".join(self.ops)
        return s if self.scale.is_identity else f"{s}@{self.scale}"

    @classmethod
    def from_string(cls, text: str, space_id: str | None = None) -> "Arch":
        """Parse the compact form."""
        if not isinstance(text, str) or not text.strip():
            raise ArchError(f"architecture string must be non-empty, got {text!r}")
        body, _, scale_txt = text.strip().partition("@")
        scale = Scale()
        if scale_txt:
            m = _SCALE_RE.match(scale_txt)
            if not m:
                raise ArchError(f"cannot read scale {scale_txt!r}; expected e.g. w1.1,d1.2,r1.15")
            try:
                scale = Scale(*(float(g) for g in m.groups()))
            except ValueError as exc:
                raise ArchError(f"cannot read scale {scale_txt!r}: {exc}") from exc
        return cls(tuple(body.split("-")), scale, space_id)

    def __str__(self) -> str:
        return self.to_string()

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": ARCH_SCHEMA_VERSION,
            "kind": "hwnas_darts.arch",
            "arch": self.to_string(),
            "ops": list(self.ops),
            "scale": {"width": self.scale.width, "depth": self.scale.depth, "resolution": self.scale.resolution},
            "space_id": self.space_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Arch":
        if not isinstance(data, dict) or "ops" not in data:
            raise ArchError("not an architecture: expected a mapping with 'ops' (an arch.json written by hwnas_darts)")
        version = data.get("schema_version")
        if version != ARCH_SCHEMA_VERSION:
            raise ArchError(f"architecture schema version {version!r} is not supported (expected {ARCH_SCHEMA_VERSION})")
        ops = data["ops"]
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise ArchError("architecture 'ops' must be a list of op names")
        scale = data.get("scale") or {}
        if not isinstance(scale, dict):
            raise ArchError("architecture 'scale' must be a mapping")
        return cls(tuple(ops), Scale(**scale), data.get("space_id"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``arch.json`` atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Arch":
        try:
            data = read_json(path, "architecture file")
        except (FileNotFoundError, ValueError) as exc:
            raise ArchError(str(exc)) from exc
        return cls.from_dict(data)

    def with_scale(self, scale: Scale) -> "Arch":
        return Arch(self.ops, scale, self.space_id)
