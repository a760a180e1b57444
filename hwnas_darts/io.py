"""Atomic file output and run-directory checks.

Every file the package writes goes through :func:`atomic_write` (or one of its wrappers): the
content is written to a temporary file in the same directory, flushed and fsynced, then renamed
over the destination. A process killed at any point leaves either the old file or the new one,
never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import RunDirError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "check_output_dir",
    "to_jsonable",
]

_logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "", keep_extension: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success rename it over ``dest``.

    The caller writes the complete file at the yielded path (for example with ``torch.save``).
    If the block raises, the temporary file is removed and ``dest`` is untouched.
    ``keep_extension``: the temporary name ends in ``dest``'s extension (for writers that
    choose the format by it).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    end = ".tmp" + dest.suffix if keep_extension else suffix + ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=end, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically and return the path."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` atomically and return the path."""
    return atomic_write_bytes(dest, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy scalars, paths, tuples and dataclasses to JSON-ready values."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None  # JSON has no NaN/inf
    return obj


def atomic_write_json(dest: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON (sorted keys off, stable layout) and write it atomically."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    return atomic_write_text(dest, text + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file; raise ``ValueError`` naming the file on a missing or corrupted file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{what} {path} is not valid JSON (truncated or corrupted?): {exc}"
        ) from exc


def check_output_dir(path: str | os.PathLike, min_free_mb: float = 50.0) -> Path:
    """Make sure ``path`` can be created and written, with some free space; fail early if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create output directory {path}: {exc.strerror or exc}") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunDirError(
            f"output directory {path} is not writable ({exc.strerror or exc}); "
            "choose another with --out DIR"
        ) from exc
    free_mb = shutil.disk_usage(path).free / 2**20
    if free_mb < min_free_mb:
        raise RunDirError(
            f"only {free_mb:.0f} MiB free on the disk of {path}; at least {min_free_mb:.0f} MiB "
            "are needed for checkpoints and exports. Free some space or choose --out DIR elsewhere."
        )
    return path


#: the metadata file embedded in every exported model (TorchScript extra file, .pt2 extra file)
META_NAME = "hwnas_meta.json"
#: image files ``predict`` and the imagefolder dataset read
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def cache_dir(kind: str) -> Path:
    """The package's cache for ``kind``: ``data`` (``HWNAS_DATA`` or ``~/.cache/hwnas_darts``),
    ``images`` (decoded image folders: ``HWNAS_IMAGE_CACHE`` or the data cache's ``images/``) or
    ``luts`` (``HWNAS_CACHE`` or ``~/.cache/hwnas_darts/luts``)."""
    home = Path.home() / ".cache" / "hwnas_darts"
    if kind == "data":
        return Path(os.environ.get("HWNAS_DATA") or home)
    if kind == "images":
        return Path(os.environ.get("HWNAS_IMAGE_CACHE") or Path(os.environ.get("HWNAS_DATA") or home) / "images")
    if kind == "luts":
        return Path(os.environ.get("HWNAS_CACHE") or home / "luts")
    raise ValueError(f"unknown cache {kind!r}")
