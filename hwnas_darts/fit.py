"""``python -m hwnas_darts.fit``: the whole pipeline from one command.

Usage::

    python -m hwnas_darts.fit [--config FILE] [--out DIR] [--seed N] [key.sub=value ...]
    python -m hwnas_darts.fit --resume runs/NAME
    python -m hwnas_darts.fit --print_config [--config FILE] [overrides]

The stages, what each owns and hands on, and how ranks coordinate under DDP are described in
:mod:`hwnas_darts.runner` and ``docs/ARCHITECTURE.md``; this module only reads the command line,
prepares the run directory and starts the runner.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

from .cli import run_cli, setup_logging
from .config import Config, apply_overrides, config_from_dict, config_to_yaml, default_config_path, read_yaml
from .errors import ConfigError, RunDirError
from .io import atomic_write_text, check_output_dir, read_json

__all__ = ["main", "parse_args", "resolve_config"]


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(
        prog="python -m hwnas_darts.fit",
        description="Hardware-aware differentiable NAS: search, derive, retrain, profile and export in one run.",
        epilog="Overrides: dotted key=value pairs (YAML values), e.g. search.epochs=2 data.dataset=digits "
               "space.stages.0.width=32; also accepted as --search.epochs=2.")
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
        key = item[2:].split("=", 1)[0] if item.startswith("--") else ""
        if "=" in item and not item.startswith("-"):
            overrides.append(item)
        elif "=" in item and ("." in key or key in Config.model_fields):
            overrides.append(item[2:])
        else:
            ap.error(f"unrecognised argument {item!r}; overrides look like search.epochs=2")
    return args, overrides


def resolve_config(args: argparse.Namespace, overrides: list[str]) -> Config:
    path = args.config or default_config_path()
    extra = list(overrides) + [f"seed={args.seed}"] * (args.seed is not None) + [f"out={args.out}"] * bool(args.out)
    if args.deterministic:
        extra.append("trainer.deterministic=true")
    return config_from_dict(apply_overrides(read_yaml(path) if path else {}, extra))


def prepare_run_dir(cfg: Config, overwrite: bool) -> Path:
    run_dir = cfg.run_dir()
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"run directory {run_dir} already exists and is not empty; choose another with --out DIR "
                              f"or name=..., continue it with --resume {run_dir}, or replace it with --overwrite")
        if not ((run_dir / "state.json").is_file() or (run_dir / "config.yaml").is_file()):
            raise RunDirError(f"{run_dir} is not a hwnas_darts run directory (no state.json); refusing to delete it "
                              "even with --overwrite")
        shutil.rmtree(run_dir)
    check_output_dir(run_dir)
    return run_dir


def _config(args: argparse.Namespace, overrides: list[str]) -> Config:
    """The run's configuration: a resumed run's own ``config.yaml``, else the config and overrides."""
    if not args.resume:
        return resolve_config(args, overrides)
    if overrides or args.config:
        raise ConfigError("--resume continues a run with its own config.yaml; drop --config and overrides")
    saved = Path(args.resume) / "config.yaml"
    if not saved.is_file():
        raise RunDirError(f"{args.resume} is not a run directory (no config.yaml)")
    return config_from_dict(read_yaml(saved))


def _open_run(args: argparse.Namespace, cfg: Config, leader: bool):
    """The run directory and state of a new or resumed run (files touched on rank 0 only)."""
    from .runner import RunState

    if args.resume:
        run_dir = Path(args.resume)
        if not leader:
            return run_dir, RunState(run_dir)
        check_output_dir(run_dir)
        for stale in run_dir.rglob(".*.tmp*"):  # temporaries of writes a kill interrupted
            stale.unlink(missing_ok=True)
        return run_dir, RunState.load(run_dir)
    run_dir, state = cfg.run_dir(), RunState(cfg.run_dir())
    if args.arch:
        state.data["fixed_arch"] = args.arch
    if leader:
        prepare_run_dir(cfg, args.overwrite)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
        state.save()
    return run_dir, state


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    setup_logging()

    def run() -> int:
        if args.print_config:
            print(config_to_yaml(resolve_config(args, overrides)), end="")
            return 0
        from . import ranks
        from .report import print_summary
        from .runner import RunContext, run_stages

        cfg = _config(args, overrides)
        # the ranks join their process group first: then only rank 0 touches the run directory
        group = ranks.start(cfg.trainer)
        run_dir, state = _open_run(args, cfg, group.leader)
        if cfg.trainer.deterministic:
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)
        ctx = RunContext(cfg, run_dir, state, group, bool(args.resume), args.arch or state.data.get("fixed_arch"))
        metrics = run_stages(ctx)
        if metrics is not None:
            print_summary(read_json(run_dir / "metrics.json"), run_dir)
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
