"""Load a raw preference dataset (hub id, local directory or file, embedded name) and apply its recipe."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import IO

from datasets import Dataset, Features, IterableDataset, Value, load_dataset

from dpo_recipes import embedded
from dpo_recipes.data.registry import PreparedSplit, RecipeError, prepare
from dpo_recipes.errors import unavailable

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def csv_as_text(path: Path) -> dict:
    """load_dataset options that read every column of a CSV file as the text it holds. CSV has no types: left to
    pandas, answers such as "NA", "None" or "null" became missing values and "42" an integer. Scores are parsed
    where a recipe reads them (``messages.number``)."""
    with open_text_file(path) as handle:
        header = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8", newline="")), [])
    return {"features": Features({column: Value("string") for column in header}), "keep_default_na": False,
            "na_filter": False}  # fmt: skip


# Compressed text files, read as datasets reads them (HH-RLHF ships as train.jsonl.gz); zstd needs `zstandard`.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}


def data_suffix(path: Path) -> str:
    """The data format's suffix, under any compression suffix: ``test.jsonl.gz`` → ``.jsonl``."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def open_text_file(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when its name says it is compressed."""
    kind = COMPRESSIONS.get(path.suffix.lower())
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    if kind == "zstd":
        import zstandard

        return io.BufferedReader(zstandard.open(path, "rb"))  # line iteration needs a buffered reader
    return path.open("rb")


def _kind(value: object) -> str | None:
    """The JSON kind of a value, as Arrow must type a column: None for null (which fits any column)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    return {str: "text", int: "number", float: "number", list: "list", dict: "object"}[type(value)]


def _line_problems(path: Path) -> list[tuple[int, int, str, str]]:
    """(row, line, reason, detail) for each line of a text file that cannot become a row: not UTF-8, and for JSONL
    also not JSON (a truncated line), not a JSON object, or a field whose kind differs from earlier rows'
    (Arrow cannot load a column of mixed kinds, and would fail on the whole file without saying where).
    Rows are numbered as the loader numbers them: blank JSONL lines are not rows."""
    problems, kinds, row = [], {}, -1
    jsonl = data_suffix(path) == ".jsonl"
    with open_text_file(path) as handle:
        for number, raw in enumerate(handle):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                row += 1
                problems.append((row, number + 1, "not valid UTF-8", f"byte {error.start}: {error.reason}"))
                continue
            if not jsonl:
                row += 1
                continue
            if not line.strip():
                continue
            row += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append((row, number + 1, "not valid JSON", f"{error.msg} at column {error.colno}"))
                continue
            if not isinstance(record, dict):
                problems.append((row, number + 1, "not a JSON object", f"a JSON {type(record).__name__}"))
                continue
            for key, value in record.items():
                kind, seen = _kind(value), kinds.get(key)
                if kind and seen and kind != seen:
                    problems.append((row, number + 1, f"field {key!r} changes type", f"{kind}; earlier rows: {seen}"))
                    break
            else:
                kinds.update({key: kinds.get(key) or _kind(value) for key, value in record.items()})
    return problems


def _checked_file(path: Path, label: str, on_bad_row: str, dropped: Counter) -> Path:
    """``path`` if every line can become a row; else an error naming the first bad row, or (skip) a copy
    without the bad lines, each counted in ``dropped`` by reason."""
    problems = _line_problems(path)
    if not problems:
        return path
    row, line, reason, detail = problems[0]
    if on_bad_row == "error":
        raise RecipeError(
            f"dataset {label!r}, row {row} (line {line} of {path}): {reason} ({detail}); {len(problems)} bad "
            "line(s) in the file; fix the file or use on_bad_row=skip"
        )
    bad_rows = {problem[0] for problem in problems}
    clean = Path(tempfile.mkdtemp(prefix="dpo-recipes-clean-")) / f"{path.name.split('.')[0]}{data_suffix(path)}"
    with open_text_file(path) as source, clean.open("wb") as target:
        row = -1
        for raw in source:
            row += 0 if data_suffix(path) == ".jsonl" and not raw.strip() else 1
            if row not in bad_rows:
                target.write(raw)
    dropped.update(problem[2] for problem in problems)
    return clean


def _load_failure(name_or_path: str, label: str, error: Exception) -> RecipeError:
    """One clear message for a dataset that would not load; the library's exception stays as the cause."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "unknown split" in first_line.lower():
        return RecipeError(f"dataset {label!r}: no such split ({first_line})")
    return RecipeError(unavailable("dataset", name_or_path, error, label))


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
    file (which then stands for whatever split is asked). Lines of text files that cannot become rows raise
    (or, with on_bad_row=skip, are left out and counted in ``dropped``); see ``_line_problems``."""
    path = Path(embedded.resolve(name_or_path))
    label = f"{name_or_path}[{split}]"
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(data_suffix(path))
            if builder is None or (builder == "parquet" and path.suffix.lower() in COMPRESSIONS):
                raise ValueError(f"dataset {name_or_path!r}: unsupported file type; use one of "
                                 f"{sorted(FILE_BUILDERS)}, json/jsonl/csv optionally compressed "
                                 f"({', '.join(COMPRESSIONS)})")  # fmt: skip
            checked = path
            if builder != "parquet":
                checked = _checked_file(path, label, on_bad_row, dropped if dropped is not None else Counter())
            raw = load_dataset(builder, data_files={split: str(checked)}, split=split, streaming=streaming,
                               **(csv_as_text(checked) if builder == "csv" else {}))  # fmt: skip
            if checked != path and not streaming:  # the cleaned copy is in datasets' cache now: no copy left behind
                shutil.rmtree(checked.parent, ignore_errors=True)
        else:
            raw = load_dataset(str(path), name=config, data_dir=data_dir, split=split, streaming=streaming)
    except RecipeError:
        raise
    except Exception as error:  # datasets raises many types; say which dataset, split and why
        raise _load_failure(name_or_path, label, error) from error
    if isinstance(raw, Dataset) and len(raw) == 0 and not (dropped and sum(dropped.values())):
        raise RecipeError(f"dataset {label!r}: the split has no rows")
    return raw


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
