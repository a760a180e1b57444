"""Error types of the package.

Every error a user can cause (a bad config, a missing dataset, a stale latency table, a broken
model file) is raised as a subclass of :class:`HwnasError` with a message that says what is
wrong and how to fix it. The command-line entry points print these messages without a
traceback; anything else is a bug in the package.
"""

from __future__ import annotations

__all__ = [
    "HwnasError",
    "ConfigError",
    "DataError",
    "LUTError",
    "LUTMissError",
    "SpaceError",
    "ArchError",
    "TrainingError",
    "ExportError",
    "ModelFileError",
    "RunDirError",
]


class HwnasError(Exception):
    """Base class of every error the package raises on purpose."""


class ConfigError(HwnasError, ValueError):
    """The configuration is invalid; ``problems`` holds one message per problem."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        n = len(self.problems)
        head = f"invalid configuration ({n} problem{'s' if n != 1 else ''}):"
        super().__init__("\n".join([head] + [f"  - {p}" for p in self.problems]))


class SpaceError(ConfigError):
    """The search space cannot be built (unknown op, impossible shape)."""


class ArchError(HwnasError, ValueError):
    """An architecture does not parse or does not fit the search space."""


class DataError(HwnasError):
    """A dataset is missing, corrupted or unusable."""


class LUTError(HwnasError):
    """A latency table cannot be used (corrupted, built for another device or space)."""


class LUTMissError(LUTError, KeyError):
    """A latency-table lookup found no row; the message names the missing key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "missing latency-table row"


class TrainingError(HwnasError):
    """Training diverged (NaN/inf) or collapsed."""


class ExportError(HwnasError):
    """An export failed or did not reproduce the eager network's outputs."""


class ModelFileError(HwnasError):
    """A model file is missing, corrupted or not one this package wrote."""


class RunDirError(HwnasError):
    """The run directory cannot be used (exists, read-only, full disk)."""
