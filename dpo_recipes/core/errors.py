"""Errors a user can act on, and one wording for "this model or dataset could not be found"."""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


class ConfigError(ValueError):
    """A run that cannot work (model, tokenizer, data or settings), found before any weights are loaded."""


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
