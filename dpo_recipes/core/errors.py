"""Errors a user can act on, and one wording for "this model or dataset could not be found".

Every problem in the user's input, settings or environment (a bad row, a bad setting or YAML, an output path
that is a file, a full disk, a missing permission) is a `UserError`: the command line prints it as one line
that says what to change. Anything else is a bug and keeps its traceback. ``--debug`` (or DPO_RECIPES_DEBUG=1)
shows the traceback of a user error too.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


DEBUG_VARIABLE = "DPO_RECIPES_DEBUG"


class UserError(Exception):
    """A problem the user can fix: printed as one line by the command line (see the module)."""


class ConfigError(UserError, ValueError):
    """A setting, file or environment that cannot work (model, tokenizer, data, settings, output path)."""


def debugging(argv: list[str]) -> tuple[bool, list[str]]:
    """(whether to show a user error's traceback, ``argv`` without ``--debug``)."""
    wanted = "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "").lower() in ("1", "true", "yes")
    return wanted, [arg for arg in argv if arg != "--debug"]


def yaml_problem(error: Exception, source: str) -> ConfigError:
    """A YAML file that is not plain data (a syntax error, or a tag such as ``!!python/object/apply`` that would
    run code: never constructed), in one line with where it is."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
    return ConfigError(f"{source}: not plain YAML: {problem}{where}; only values, lists and mappings are read")


def os_problem(error: Exception, what: str) -> ConfigError | None:
    """A user error for what the environment refused (no space, no permission, a file where a folder should be),
    or None for an OSError that is not the user's to fix."""
    causes = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "the file system is read-only",
        errno.EEXIST: "a file, not a directory, is in the way",
        errno.ENOTDIR: "a file, not a directory, is in the way",
    }
    cause = causes.get(getattr(error, "errno", None))
    if cause is None and "No space left on device" in str(error):  # safetensors' own error type says it in words
        cause = causes[errno.ENOSPC]
    return None if cause is None else ConfigError(f"{what}: {cause} ({getattr(error, 'filename', None) or error})")


def unavailable(what: str, name: str, error: Exception, label: str | None = None) -> str:
    """Why ``name`` (a model or dataset: ``what``, shown as ``label``) could not be read, in one line: a local
    path that does not load, or a hub id with no network or with offline mode on."""
    label = label or name
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    data_suffixes = (".json", ".jsonl", ".csv", ".parquet", ".gz", ".bz2", ".xz", ".zst")
    looks_local = name.startswith((".", "/", "~")) or Path(name).suffix in data_suffixes
    if looks_local or Path(name).exists():
        return f"{what} {label!r}: could not load the local path {name!r}: {detail}"
    offline = any(os.environ.get(flag, "").lower() in ("1", "true") for flag in OFFLINE_FLAGS)
    where = f"offline mode is on ({', '.join(OFFLINE_FLAGS)})" if offline else "the hub could not serve it"
    return (
        f"{what} {label!r}: not a local file or directory, and {where}: {detail}. Pass a local path, or run online "
        "once so the hub's copy is cached."
    )
