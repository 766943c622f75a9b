"""Load a raw preference dataset (hub id, local directory or file, embedded name) and apply its recipe."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from datasets import Dataset, IterableDataset, load_dataset

from dpo_recipes import embedded
from dpo_recipes.data.registry import PreparedSplit, RecipeError, prepare

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _undecodable_lines(path: Path) -> list[tuple[int, UnicodeDecodeError]]:
    bad = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                bad.append((number, error))
    return bad


def _utf8_checked(path: Path, label: str, on_bad_row: str, dropped: Counter) -> Path:
    """A text file with every line valid UTF-8: ``path`` itself, or (skip) a copy without the bad lines."""
    bad = _undecodable_lines(path)
    if not bad:
        return path
    number, error = bad[0]
    if on_bad_row == "error":
        raise RecipeError(
            f"dataset {label!r}, row {number} (line {number + 1} of {path}): not valid UTF-8 "
            f"(byte {error.start}: {error.reason}); {len(bad)} such line(s); fix the file or use on_bad_row=skip"
        )
    skip = {n for n, _ in bad}
    clean = Path(tempfile.mkdtemp(prefix="dpo-recipes-utf8-")) / path.name
    with path.open("rb") as source, clean.open("wb") as target:
        target.writelines(line for n, line in enumerate(source) if n not in skip)
    dropped["not valid UTF-8"] += len(bad)
    return clean


def load_raw(
    name_or_path: str,
    split: str,
    config: str | None = None,
    data_dir: str | None = None,
    streaming: bool = False,
    on_bad_row: str = "error",
    dropped: Counter | None = None,
) -> Dataset | IterableDataset:
    """One raw split: a hub id or local directory through ``load_dataset``, or a single json/jsonl/csv/parquet
    file (which then stands for whatever split is asked). Lines of text files that are not UTF-8 raise (or,
    with on_bad_row=skip, are left out and counted in ``dropped``)."""
    path = Path(embedded.resolve(name_or_path))
    label = f"{name_or_path}[{split}]"
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise ValueError(f"dataset {name_or_path!r}: unsupported file type; use one of {sorted(FILE_BUILDERS)}")
            if builder != "parquet":
                path = _utf8_checked(path, label, on_bad_row, dropped if dropped is not None else Counter())
            return load_dataset(builder, data_files={split: str(path)}, split=split, streaming=streaming)
        return load_dataset(str(path), name=config, data_dir=data_dir, split=split, streaming=streaming)
    except (RecipeError, ValueError, KeyError):
        raise
    except Exception as error:  # datasets raises many types; say which dataset, split and why
        raise RecipeError(f"dataset {label!r}: could not load it: {type(error).__name__}: {error}") from error


def load_preference_splits(
    dataset_name: str,
    recipe: str,
    splits: dict[str, str],
    dataset_config: str | None = None,
    data_dir: str | None = None,
    max_rows: dict[str, int | None] | None = None,
    fmt: str = "conversational",
    on_bad_row: str = "error",
    streaming: bool = False,
    **options,
) -> dict[str, PreparedSplit]:
    """``splits`` maps a role ("train", "test") to a split name of the raw dataset; ``options`` go to the recipe.

    ``max_rows`` optionally caps how many raw rows of a role are read (the first N, for quick runs).
    """
    prepared = {}
    for role, split in splits.items():
        unreadable: Counter = Counter()
        raw = load_raw(dataset_name, split, dataset_config, data_dir, streaming, on_bad_row, unreadable)
        limit = (max_rows or {}).get(role)
        if limit is not None:
            raw = raw.take(limit) if isinstance(raw, IterableDataset) else raw.select(range(min(limit, len(raw))))
        result = prepare(raw, recipe, f"{dataset_name}[{split}]", fmt=fmt, on_bad_row=on_bad_row, **options)
        result.rows_read += sum(unreadable.values())
        result.dropped.update(unreadable)
        prepared[role] = result
    return prepared
