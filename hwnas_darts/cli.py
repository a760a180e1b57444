"""Shared command-line plumbing: logging set-up and turning package errors into clean messages."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Callable

from .errors import HwnasError

__all__ = ["setup_logging", "run_cli", "quiet_third_party", "console"]


def console():
    """A rich console; wide when the output is not a terminal (logs, pipes) so tables are not cut."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def quiet_third_party() -> None:
    """Silence warnings that say nothing actionable to a user of this package."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*tensor.detach\\(\\) first.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "pytorch_lightning.accelerators.cuda", "lightning.pytorch.accelerators.cuda",
                 "lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_SILENT", "true")


def setup_logging(level: int = logging.INFO) -> None:
    """Rich console logging for the package's loggers (idempotent)."""
    root = logging.getLogger("hwnas_darts")
    if root.handlers:
        return
    try:
        from rich.logging import RichHandler

        from rich.console import Console

        wide = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
        handler: logging.Handler = RichHandler(console=wide, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    except ImportError:  # pragma: no cover
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    quiet_third_party()


def run_cli(fn: Callable[[], int]) -> int:
    """Run ``fn``; package errors print their message (no traceback) and exit with status 2."""
    try:
        return int(fn() or 0)
    except HwnasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed stages and the last checkpoint are kept (resume with --resume RUN_DIR)",
              file=sys.stderr)
        return 130
