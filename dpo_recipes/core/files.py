"""Write-then-rename helpers: an interrupted run never leaves a half-written file or directory behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """Where built artifacts and cached answers live: ``$DPO_RECIPES_CACHE``, default ``~/.cache/dpo_recipes``."""
    return Path(os.environ.get("DPO_RECIPES_CACHE", Path.home() / ".cache" / "dpo_recipes"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open`` would (0666 less the umask): temporary-file writers (mkstemp, and
    the libraries that save weights through one) create 0600, which other users sharing a directory cannot read."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block completes it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        yield Path(scratch)
        follow_umask(scratch)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as scratch:
        scratch.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a scratch directory that becomes ``path`` only if the block completes.

    If another process finished the same directory first, its copy is kept and ours is discarded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        yield scratch
        try:
            os.rename(scratch, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
