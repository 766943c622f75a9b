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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from datasets import Dataset, Features, IterableDataset, Value, load_dataset

from dpo_recipes.core.errors import ConfigError, unavailable
from dpo_recipes.data.registry import PreparedSplit, RecipeError, prepare

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def csv_as_text(path: Path) -> dict:
    """load_dataset options that read every column of a CSV file as the text it holds. CSV has no types: left to
    pandas, answers such as "NA", "None" or "null" became missing values and "42" an integer. Scores are parsed
    where a recipe reads them (``messages.number``)."""
    with open_text_file(path) as handle:
        header = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8", newline="")), [])
    return {
        "features": Features({column: Value("string") for column in header}),
        "keep_default_na": False,
        "na_filter": False,
    }


# Compressed text files, read as datasets reads them (HH-RLHF ships as train.jsonl.gz); zstd needs `zstandard`.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}


def _local(name_or_path: str) -> str:
    """An existing path as given; otherwise the embedded artifact's path if it names one. (The embedded builders
    import torch and transformers, which a local data file never needs.)"""
    if Path(name_or_path).expanduser().exists():
        return name_or_path
    from dpo_recipes.worlds import embedded

    return embedded.resolve(name_or_path)


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


BOM = b"\xef\xbb\xbf"
MAX_DEPTH = 100  # deeper JSON is not preference data; Python's parser would overflow its stack further down


def _lines(path: Path) -> tuple[list[bytes] | None, bool]:
    """The file's lines as the loader must see them, and whether that differs from the bytes on disk: a UTF-8
    BOM at the start is dropped, and classic-Mac CR-only line endings are split into lines. (None, False) when
    the file needs neither: it is then read line by line, without holding it in memory."""
    with open_text_file(path) as handle:
        head = handle.read(1 << 20)
    cr_only = b"\r" in head and b"\n" not in head
    if not head.startswith(BOM) and not cr_only:
        return None, False
    with open_text_file(path) as handle:
        data = handle.read().removeprefix(BOM)
    lines = data.split(b"\r") if cr_only else data.splitlines(keepends=True)
    return [line.rstrip(b"\r\n") + b"\n" for line in lines], True


def _iter_lines(path: Path):
    lines, _ = _lines(path)
    if lines is not None:
        yield from lines
        return
    with open_text_file(path) as handle:
        yield from handle


def _is_blank(raw: bytes) -> bool:
    """A line the loader skips: only ASCII whitespace (a line of NBSP or U+001E is not blank to Arrow)."""
    return not raw.strip(b" \t\r\n")


def _unique_keys(pairs: list[tuple]) -> dict:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise ValueError(f"duplicate key {duplicated[0]!r}")
    return dict(pairs)


def _depth(value, limit: int = MAX_DEPTH) -> int:
    if isinstance(value, (dict, list)) and limit > 0:
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(child, limit - 1) for child in children), default=0)
    return 0


def _json_problem(line: str) -> tuple[str, str] | tuple[None, dict]:
    """(reason, detail) for a JSONL line the loader cannot take, or (None, the parsed record)."""
    try:
        record = json.loads(line, object_pairs_hook=_unique_keys)
    except RecursionError:
        return "not valid JSON", f"nested more than {MAX_DEPTH} levels deep"
    except json.JSONDecodeError as error:
        return "not valid JSON", f"{error.msg} at column {error.colno}"
    except ValueError as error:  # from _unique_keys
        return "not valid JSON", str(error)
    if not isinstance(record, dict):
        return "not a JSON object", f"a JSON {type(record).__name__}"
    if _depth(record) >= MAX_DEPTH:
        return "not valid JSON", f"nested more than {MAX_DEPTH} levels deep"
    try:  # a surrogate can only come from an escape, so only a line with "\\u" can hold a lone one
        if "\\u" in line:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        return "not valid JSON", f"lone surrogate U+{ord(error.object[error.start]):04X} (an escape no text can hold)"
    return None, record


@dataclass
class Record:
    """One row as the loader will see it: where it is in the file, what a cleaned copy writes for it, the JSON
    kind of each field (for the type check; the parsed values are not kept: a large file would be held twice),
    and why it cannot become a row (reason, detail), if it cannot."""

    where: str
    raw: object
    kinds: dict[str, str | None] | None = None
    problem: tuple[str, str] | None = None

    def parsed(self, found: tuple) -> None:
        """Take `_json_problem`'s answer: a problem, or the record whose field kinds are kept."""
        reason, detail = found
        if reason:
            self.problem = (reason, detail)
        else:
            self.kinds = {key: _kind(value) for key, value in detail.items()}


def _jsonl_records(path: Path) -> list[Record]:
    """JSON Lines (also what datasets reads from a .json file that is not one JSON document). Blank lines are
    not rows."""
    records = []
    for number, raw in enumerate(_iter_lines(path), start=1):
        if _is_blank(raw):
            continue
        record = Record(f"line {number}", raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            record.problem = ("not valid UTF-8", f"byte {error.start}: {error.reason}")
        else:
            record.parsed(_json_problem(line))
        records.append(record)
    return records


def _json_records(path: Path) -> list[Record] | None:
    """The elements of a file holding one JSON array of rows (pretty-printed or not), or None when the file is
    not one JSON array (then it is read as JSON Lines). A row spans as many lines as it takes; skipping a bad
    row drops that whole element and nothing of its neighbours."""
    data = b"".join(_iter_lines(path))
    if not data.lstrip().startswith(b"["):
        return None
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RecipeError(
            f"{path}: not a readable JSON array ({error}); a damaged array cannot be split into rows safely: fix "
            "it, or convert it to JSON Lines (one row per line) to skip bad rows"
        ) from error
    records = []
    for index, element in enumerate(document):
        record = Record(f"element {index}", element)
        if isinstance(element, dict):
            record.parsed(_json_problem(json.dumps(element)))
        else:
            record.problem = ("not a JSON object", f"a JSON {type(element).__name__}")
        records.append(record)
    return records


def _csv_records(path: Path) -> tuple[list[str], list[Record]]:
    """CSV records, each as many lines as its quoted fields span (the csv module's records, not lines)."""
    text = b"".join(_iter_lines(path)).decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header, records, first = next(reader, []), [], 2
    for cells in reader:
        where = f"line {first}" if reader.line_num == first else f"lines {first}-{reader.line_num}"
        record = Record(where, cells)
        bad = [i for i, cell in enumerate(cells) if any("\udc80" <= ch <= "\udcff" for ch in cell)]
        if bad:
            column = header[bad[0]] if bad[0] < len(header) else bad[0]
            record.problem = ("not valid UTF-8", f"in column {column!r}")
        elif len(cells) != len(header):
            record.problem = ("wrong number of fields", f"{len(cells)}; the header has {len(header)}")
        records.append(record)
        first = reader.line_num + 1
    return header, records


def _flag_type_changes(records: list[Record]) -> None:
    """Arrow needs one kind per column. The kind is the one most rows have (never just the first row's: one
    odd first row would otherwise condemn every good row); rows of another kind are the bad ones."""
    counts: dict[str, Counter] = {}
    for record in records:
        for key, kind in (record.kinds or {}).items():
            if kind:
                counts.setdefault(key, Counter())[kind] += 1
    usual = {key: kinds.most_common(1)[0][0] for key, kinds in counts.items()}
    for record in records:
        for key, kind in (record.kinds or {}).items():
            if record.problem is None and kind and kind != usual[key]:
                record.problem = (f"field {key!r} changes type", f"{kind}; most rows: {usual[key]}")


def _write_records(records: list[Record], path: Path, suffix: str, header: list[str] | None) -> Path:
    """A cleaned copy holding the given records, in a form datasets reads (JSON arrays become JSON Lines)."""
    clean = Path(tempfile.mkdtemp(prefix="dpo-recipes-clean-")) / f"{path.name.split('.')[0]}{suffix}"
    if suffix == ".csv":
        with clean.open("w", encoding="utf-8", newline="") as target:
            writer = csv.writer(target)
            writer.writerows([header, *(record.raw for record in records)])
    else:
        with clean.open("wb") as target:
            for record in records:
                raw = record.raw
                target.write(raw if isinstance(raw, bytes) else (json.dumps(raw, ensure_ascii=False) + "\n").encode())
    return clean


def _checked_file(path: Path, label: str, on_bad_row: str, dropped: Counter) -> Path:
    """``path`` if every row can be loaded as it is; else an error naming the first bad row (its row number as
    the loader counts rows, and where it is in the file), or (skip) a copy without the bad rows, each counted in
    ``dropped`` by reason. Rows are records, not lines: a pretty-printed JSON row or a CSV field spanning lines
    is dropped or kept whole. A file whose only fault is its form (a BOM, CR-only line endings, a JSON array
    read as JSON Lines) is read through a normalised copy, with nothing dropped."""
    suffix, header = data_suffix(path), None
    records = _json_records(path) if suffix == ".json" else None
    if suffix == ".csv":
        header, records = _csv_records(path)
    elif records is None:
        records = _jsonl_records(path)
    else:
        suffix = ".jsonl"  # the kept elements are written one per line
    _flag_type_changes(records)
    problems = [(row, record) for row, record in enumerate(records) if record.problem]
    _, reformed = _lines(path)
    if not problems and not reformed and suffix == data_suffix(path):
        return path
    if problems and on_bad_row == "error":
        row, record = problems[0]
        reason, detail = record.problem
        raise RecipeError(
            f"dataset {label!r}, row {row} ({record.where} of {path}): {reason} ({detail}); {len(problems)} bad "
            "row(s) in the file; fix the file or use on_bad_row=skip"
        )
    dropped.update(record.problem[0] for _, record in problems)
    return _write_records([record for record in records if not record.problem], path, suffix, header)


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
    (or, with on_bad_row=skip, are left out and counted in ``dropped``); see ``_checked_file``."""
    path = Path(_local(name_or_path))
    label = f"{name_or_path}[{split}]"
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(data_suffix(path))
            if builder is None or (builder == "parquet" and path.suffix.lower() in COMPRESSIONS):
                raise ConfigError(
                    f"dataset {name_or_path!r}: unsupported file type; use one of "
                    f"{sorted(FILE_BUILDERS)}, json/jsonl/csv optionally compressed "
                    f"({', '.join(COMPRESSIONS)})"
                )
            checked = path
            if builder != "parquet":
                checked = _checked_file(path, label, on_bad_row, dropped if dropped is not None else Counter())
            raw = load_dataset(
                builder,
                data_files={split: str(checked)},
                split=split,
                streaming=streaming,
                **(csv_as_text(checked) if builder == "csv" else {}),
            )
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
    num_proc: int | None = None,
    **options,
) -> dict[str, PreparedSplit]:
    """``splits`` maps a role ("train", "test") to a split name of the raw dataset; ``options`` go to the recipe.

    ``max_rows`` optionally caps how many raw rows of a role are read (the first N, for quick runs); ``num_proc``
    is `prepare`'s.
    """
    prepared = {}
    for role, split in splits.items():
        unreadable: Counter = Counter()
        raw = load_raw(dataset_name, split, dataset_config, data_dir, streaming, on_bad_row, unreadable)
        limit = (max_rows or {}).get(role)
        if limit is not None:
            raw = raw.take(limit) if isinstance(raw, IterableDataset) else raw.select(range(min(limit, len(raw))))
        label = f"{dataset_name}[{split}]"
        result = prepare(raw, recipe, label, fmt=fmt, on_bad_row=on_bad_row, num_proc=num_proc, **options)
        result.rows_read += sum(unreadable.values())
        result.dropped.update(unreadable)
        prepared[role] = result
    return prepared
