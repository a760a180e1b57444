"""Declarative configuration: pydantic sections, YAML loading, dotted overrides.

A configuration is a YAML file whose top-level keys are the sections of :class:`Config`. Each
section is a pydantic model with ``extra="forbid"`` and strict types: an unknown key (with a
did-you-mean), a value of the wrong type, a choice outside its ``Literal`` or a number outside
its ``Field`` range is reported with its YAML path (``search.epochs``), every problem at once, in
one :class:`~hwnas_darts.errors.ConfigError`, before any work starts. Values that scale time or
memory have upper bounds, so a typo that would run for hours is refused in the first second.

Overrides use dotted paths and YAML values, e.g. ``search.epochs=2``,
``space.stages.0.width=48`` or ``data.dataset=digits``.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, Field, ValidationError

from .errors import ConfigError

__all__ = [
    "Config", "DataConfig", "SyntheticConfig", "LayerConfig", "StageConfig", "HeadConfig", "SpaceConfig",
    "SearchConfig", "HardwareConfig", "ObjectiveConfig", "DeriveConfig", "RetrainConfig", "ScaleConfig",
    "ExportConfig", "LoggerConfig", "TrainerConfig", "load_config", "apply_overrides", "config_to_dict",
    "config_to_yaml", "config_from_dict", "read_yaml", "default_config_path",
]

class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e9`` as a string; this loader reads it as the number a user meant."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


from .sections import (DataConfig, DeriveConfig, ExportConfig, HardwareConfig, HeadConfig,  # noqa: E402
                       LayerConfig, LoggerConfig, ObjectiveConfig, RetrainConfig, ScaleConfig, SearchConfig,
                       Section, SpaceConfig, StageConfig, SyntheticConfig, TrainerConfig)


class Config(Section):
    """The whole run."""

    name: str = Field("fashion_mnist", min_length=1, pattern=r"^[^/]+$")
    seed: int = 0
    out: Optional[str] = None
    data: DataConfig = Field(default_factory=DataConfig)
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    derive: DeriveConfig = Field(default_factory=DeriveConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    def retrain_augment(self) -> bool | str:
        """How the retraining's batches are augmented: True (cropped and flipped), ``"flip"`` (flipped
        only), False; ``retrain.augment``, or ``data.augment`` (the search's) where it is None."""
        a = self.retrain.augment
        return self.data.augment if a is None else a if a == "flip" else bool(a)

    def run_dir(self) -> Path:
        """The run directory: ``out`` if set, else ``runs/<name>``."""
        return Path(self.out) if self.out else Path("runs") / self.name


# --------------------------------------------------------------------------------------------
# pydantic's errors as one message per YAML path
# --------------------------------------------------------------------------------------------
def _walk(loc: tuple) -> tuple[str, type[BaseModel] | None, list[str]]:
    """The YAML path of ``loc`` (pydantic's union/type tags dropped) and the model it ends in."""
    model: Any = Config
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(str(item))
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or item not in fields:
            if fields is not None:
                parts.append(str(item))  # an unknown key: part of the path, the walk ends
            break  # else a union member's or a type's tag: not part of the YAML path
        parts.append(item)
        ann = fields[item].annotation
        model = next((a for a in _members(ann) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return ".".join(parts), model, parts


def _members(ann: Any) -> list[Any]:
    out, todo = [], [ann]
    while todo:
        a = todo.pop()
        args = getattr(a, "__args__", None)
        if args and getattr(a, "__origin__", None) is not Literal:
            todo.extend(args)
        else:
            out.append(a)
    return out


_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_TYPES = {"int_type": "expected an integer", "int_from_float": "expected an integer", "float_type": "expected a number",
          "bool_type": "expected true or false", "string_type": "expected a string", "list_type": "expected a list",
          "model_type": "expected a mapping of keys to values", "dict_type": "expected a mapping of keys to values"}


def _message(err: dict[str, Any]) -> str:
    """One pydantic error in the words of this package ("must be >= 1")."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {bound:g}" if isinstance(bound, (int, float)) else f"must be {_BOUNDS[kind]} {bound}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind in _TYPES:
        return _TYPES[kind]
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    msg = err["msg"].removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _problems(exc: ValidationError) -> list[str]:
    merged: dict[str, list[tuple[str, str]]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            parent, owner, _ = _walk(loc[:-1])
            owner = owner or Config
            valid = list(owner.model_fields)
            key = str(loc[-1])
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            full = f"{parent}.{key}" if parent else key
            merged.setdefault(full, []).append((f"unknown key{hint}; valid keys of {parent or 'config'}: "
                                                f"{', '.join(valid)}", ""))
            continue
        path, _, _ = _walk(loc)
        msg = _message(err)
        got = f", got {err['input']!r}" if err["type"] != "value_error" and "input" in err else ""
        merged.setdefault(path or "config", []).append((msg, got))
    out = []
    for path, items in merged.items():
        msgs = list(dict.fromkeys(m for m, _ in items))
        rest = [m.removeprefix("must be ").removeprefix("expected ") for m in msgs[1:]]
        out.append(f"{path}: {' or '.join([msgs[0]] + rest)}{items[0][1]}")
    return out


# --------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------
def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {data!r}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as plain data (what ``config.yaml`` holds)."""
    return cfg.model_dump(mode="python")


def config_to_yaml(cfg: Config) -> str:
    """The configuration as YAML text, sections in declaration order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        where = ".".join(keys[: i + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"{where}: list index out of range (the list has {len(node)} items)")
            node = node[int(key)]
            continue
        if key not in node or node[key] is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{where}: is a value, not a section; cannot set {dotted}")
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"{dotted}: list index out of range (the list has {len(node)} items)")
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a plain config dict."""
    data = copy.deepcopy(data)
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value (e.g. search.epochs=2)")
        key, raw = item.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = _yaml(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from exc
        _set_dotted(data, key, value)
    return data


def default_config_path() -> Path | None:
    """``configs/fashion_mnist.yaml`` from the working directory or the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        cand = base / "configs" / "fashion_mnist.yaml"
        if cand.is_file():
            return cand
    return None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict, with clear errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (default: ``configs/fashion_mnist.yaml``), apply overrides, validate.

    Args:
        path: YAML file; ``None`` uses the default config (or the built-in defaults, which are
            the same values, when the file is not found).
        overrides: dotted ``key=value`` strings applied on top of the file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: listing every problem with its YAML path.
    """
    if path is None:
        path = default_config_path()
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data)
