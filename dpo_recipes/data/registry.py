"""The dataset-recipe registry and the one function that applies a recipe to a raw dataset.

A recipe is a small pure function from one raw row to one TRL preference row (``prompt``/``chosen``/
``rejected`` plus metadata columns), registered by name with the hub id and splits of the dataset it reads.
It may also name a ``drop_reason``, or raise ``DropRow(reason)`` while converting: such rows are valid data
that the recipe leaves out by design (a known quirk of the real dataset), and they are left out *and counted*
under any policy, never dropped silently (so are pairs whose chosen and rejected completions are identical). A
malformed row raises ``BadRow(field, problem)``; `prepare` turns it into an error naming the dataset, the row
index and the field, or, with ``on_bad_row="skip"``, into a counted drop.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import types
import typing
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, IterableDataset

from dpo_recipes.core.errors import UserError
from dpo_recipes.core.trl_internals import dataset_fingerprint

logger = logging.getLogger(__name__)

# conversational: message lists (TRL applies the chat template). standard: strings; a lone user turn stays a bare
# string and longer prompts become an HH-style transcript. transcript: strings, every prompt a transcript, so a
# dataset that mixes single- and multi-turn rows gives the model one prompt format.
FORMATS = ("conversational", "standard", "transcript")
BAD_ROW_POLICIES = ("error", "skip")


class BadRow(ValueError):
    """A raw row a recipe cannot convert; raised by recipe functions with the offending field."""

    def __init__(self, field: str, problem: str, detail: str | None = None):
        super().__init__(f"field {field!r}: {problem}" + (f": {detail}" if detail else ""))
        self.field, self.problem = field, problem

    @property
    def reason(self) -> str:
        """The counted drop reason under on_bad_row=skip (no row content, so equal problems add up)."""
        return f"bad {self.field}: {self.problem}"


class DropRow(Exception):
    """A well-formed row the recipe leaves out by design, with the reason it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RecipeError(UserError, ValueError):
    """A bad row or recipe setting, located: which dataset, which recipe, which row, which field."""


@dataclass(frozen=True)
class DatasetRecipe:
    name: str
    convert: Callable[..., dict]  # (row, fmt, **options) -> TRL row
    hub_id: str | None = None
    splits: tuple[str, ...] = ("train", "test")
    drop_reason: Callable[..., str | None] | None = None  # (row, **options) -> reason or None
    regroup: Callable[..., Dataset] | None = None  # (raw dataset, **options) -> raw dataset, for cross-row recipes

    @property
    def summary(self) -> str:
        return (self.convert.__doc__ or "").strip().splitlines()[0]

    def options(self) -> dict[str, tuple]:
        """Every option of the recipe (keyword parameters of its functions) → the types it accepts."""
        accepted = {}
        for function in (self.convert, self.drop_reason, self.regroup):
            if function is None:
                continue
            hints = typing.get_type_hints(function)
            parameters = list(inspect.signature(function).parameters.values())[1:]  # after the row (or dataset)
            for name in (p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)):
                if name != "fmt":
                    hint = hints.get(name, object)
                    accepted[name] = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        return accepted

    def check_options(self, options: dict) -> None:
        """Options are typed and strict: an unknown name or a value of the wrong type (the string "false" for a
        boolean, say) is an error that lists what the recipe accepts, never silently taken."""
        accepted = self.options()
        described = ", ".join(f"{name} ({_type_names(types_)})" for name, types_ in sorted(accepted.items()))
        for name, value in options.items():
            if name not in accepted:
                raise RecipeError(f"recipe {self.name!r} has no option {name!r}; its options: {described or 'none'}")
            if not _accepts(accepted[name], value):
                raise RecipeError(
                    f"recipe {self.name!r}: option {name!r} must be {_type_names(accepted[name])}, got "
                    f"{type(value).__name__} {value!r}"
                )


def _accepts(accepted: tuple, value) -> bool:
    """isinstance, except that a bool is not a number and an int is a float; a ``Literal`` takes its values."""
    for kind in accepted:
        if typing.get_origin(kind) is typing.Literal:
            if value in typing.get_args(kind) and not isinstance(value, bool):
                return True
            continue
        if kind is object or (value is None and kind is type(None)):
            return True
        if isinstance(value, bool):
            if kind is bool:
                return True
        elif kind is float and isinstance(value, (int, float)) or kind is not bool and isinstance(value, kind):
            return True
    return False


def _type_names(accepted: tuple) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}

    def name(kind) -> str:
        if typing.get_origin(kind) is typing.Literal:
            return "one of " + ", ".join(repr(value) for value in typing.get_args(kind))
        return names.get(kind, getattr(kind, "__name__", str(kind)))

    return " or ".join(name(kind) for kind in accepted)


RECIPES: dict[str, DatasetRecipe] = {}


def register(name: str, **details):
    """Decorator: add a row-conversion function to the registry under ``name`` (see DatasetRecipe)."""

    def decorator(convert: Callable[..., dict]) -> Callable[..., dict]:
        if name in RECIPES:
            raise ValueError(f"dataset recipe {name!r} is registered twice")
        RECIPES[name] = DatasetRecipe(name, convert, **details)
        return convert

    return decorator


def get_recipe(name: str) -> DatasetRecipe:
    if name not in RECIPES:
        raise RecipeError(f"unknown dataset recipe {name!r}; valid recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


@dataclass
class PreparedSplit:
    """A split in TRL's preference format, and the account of every raw row that did not make it.

    For a streaming (iterable) dataset the counts fill in as the dataset is iterated.
    """

    dataset: Dataset | IterableDataset
    rows_read: int
    dropped: Counter = field(default_factory=Counter)
    note: str = ""  # said after the account, e.g. that a test split is not held out

    @property
    def rows_kept(self) -> int:
        return self.rows_read - sum(self.dropped.values())

    def describe(self, label: str) -> str:
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.dropped.most_common()) or "none"
        dropped = sum(self.dropped.values())
        note = f"; {self.note}" if self.note else ""
        return f"{label}: read {self.rows_read} rows, kept {self.rows_kept}, dropped {dropped} ({reasons}){note}"


IDENTICAL = "chosen == rejected (no preference)"  # a drop, counted: the pair has no preference to learn
SAME_TEXT = "chosen and rejected differ only in whitespace or Unicode form (no preference)"


def _canonical(value):
    """Text as a reader sees it: Unicode NFC, every run of whitespace (line endings included) one space."""
    if isinstance(value, list):
        return [(turn.get("role"), _canonical(turn.get("content", ""))) for turn in value]
    return " ".join(unicodedata.normalize("NFC", value).split()) if isinstance(value, str) else value


def no_preference(converted: dict) -> str | None:
    """Why a converted pair teaches nothing (identical, or identical to a reader), or None."""
    if converted["chosen"] == converted["rejected"]:
        return IDENTICAL
    return SAME_TEXT if _canonical(converted["chosen"]) == _canonical(converted["rejected"]) else None


_ROW = "__row_index"
_DROP = "__drop_reason"
_CONVERTED = "__converted"
PARALLEL_ROWS = 20_000  # below this, starting worker processes costs more than it saves


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prepare(
    raw: Dataset | IterableDataset,
    recipe_name: str,
    dataset_label: str,
    fmt: str = "conversational",
    on_bad_row: str = "error",
    num_proc: int | None = None,
    **options,
) -> PreparedSplit:
    """Apply a registered recipe to every row of ``raw``: count the rows it drops, convert the rest (each once).
    ``num_proc`` worker processes map a split of at least PARALLEL_ROWS rows (default: every available core)."""
    num_proc = available_cores() if num_proc is None else num_proc
    recipe = get_recipe(recipe_name)
    if fmt not in FORMATS:
        raise RecipeError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if on_bad_row not in BAD_ROW_POLICIES:
        raise RecipeError(f"unknown on_bad_row {on_bad_row!r}; choose one of {BAD_ROW_POLICIES}")
    recipe.check_options(options)
    if recipe.regroup:
        raw = recipe.regroup(raw, **options)

    def convert(row: dict) -> dict:
        return recipe.convert({k: v for k, v in row.items() if k not in (_ROW, _DROP)}, fmt, **options)

    def located(error: BadRow, index: int) -> RecipeError:
        return RecipeError(f"dataset {dataset_label!r} (recipe {recipe.name!r}), row {index}: {error}")

    def checked(row: dict, index: int) -> tuple[str, str]:
        """The row's drop reason ('' to keep) and, if kept, its conversion as JSON: one column of one type
        whatever the recipe's output, so each row is converted once and a dropped row needs no placeholder. A
        column the recipe passes through unchanged (the trl recipe's extra columns: bytes, timestamps, anything
        Arrow holds) is named, not encoded; `decode` takes it from the row, still in its Arrow type."""
        converted = None
        try:
            reason = recipe.drop_reason(row, **options) if recipe.drop_reason else None
            if reason is None:
                converted = convert(row)
                reason = no_preference(converted)
        except DropRow as drop:
            reason = drop.reason
        except BadRow as error:
            if on_bad_row == "error":
                raise located(error, index) from error
            reason = error.reason
        return reason or "", "" if reason else _encoded(converted, row)

    def annotate(batch: dict, indices: list[int]) -> dict:  # batched: datasets' per-row overhead, paid per batch
        results = [checked(row, index) for row, index in zip(_rows(batch), indices, strict=True)]
        return {
            _ROW: indices,
            _DROP: [reason for reason, _ in results],
            _CONVERTED: [encoded for _, encoded in results],
        }

    def decode(batch: dict) -> dict:
        """The kept rows of a batch, as the recipe converted them (a batched map may return fewer rows)."""
        rows = [
            {item[0]: item[1] if len(item) == 2 else batch[item[0]][i] for item in json.loads(batch[_CONVERTED][i])}
            for i, reason in enumerate(batch[_DROP])
            if not reason
        ]
        names = dict.fromkeys(name for row in rows for name in row)  # every column, in first-seen order
        return {name: [row.get(name) for row in rows] for name in names}

    cache = _cache_keys(raw, recipe.name, fmt, on_bad_row, options)
    workers = {"num_proc": num_proc} if num_proc and isinstance(raw, Dataset) and len(raw) >= PARALLEL_ROWS else {}
    columns = raw.column_names or list(next(iter(raw)))  # a stream may not know its features
    annotated = raw.map(
        annotate,
        with_indices=True,
        batched=True,
        **_desc(raw, f"Checking {dataset_label}"),
        **cache("checked"),
        **workers,
    )
    dropped: Counter = Counter()
    work = [_ROW, _DROP, _CONVERTED, *columns]
    if isinstance(raw, IterableDataset):
        prepared = PreparedSplit(None, rows_read=0, dropped=dropped)

        def keep(row: dict) -> bool:  # counts as the stream is consumed
            prepared.rows_read += 1
            if row[_DROP]:
                dropped[row[_DROP]] += 1
            return not row[_DROP]

        prepared.dataset = annotated.filter(keep).map(decode, batched=True, remove_columns=work)
        return prepared
    dropped.update(reason for reason in annotated.data.column(_DROP).to_pylist() if reason)  # Arrow: no row dicts
    converted = annotated.map(
        decode, batched=True, remove_columns=work, desc=f"Converting {dataset_label}", **cache("converted"), **workers
    )
    prepared = PreparedSplit(converted, rows_read=len(raw), dropped=dropped)
    logger.info(prepared.describe(dataset_label))
    return prepared


def _rows(batch: dict) -> list[dict]:
    """A batch of a batched map (column name → values) as row dicts."""
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


def _encoded(converted: dict, row: dict) -> str:
    """A converted row as a JSON list in its column order: ``[name, value]`` for what the recipe made, ``[name]``
    for a value it passed through (the very object of the raw row)."""
    return json.dumps([[key] if key in row and value is row[key] else [key, value] for key, value in converted.items()])


@functools.cache
def _recipes_source() -> str:
    """A hash of this package's source: the recipes and every helper they call."""
    files = sorted(Path(__file__).parent.glob("*.py"))
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


def _cache_keys(raw, recipe: str, fmt: str, on_bad_row: str, options: dict) -> Callable[[str], dict]:
    """``new_fingerprint`` for each step of `prepare`. datasets keys its cache by a hash of the mapped function,
    which sees the recipe function only by name, so a changed recipe (a new release, an edit) would be served
    the rows its old code made; the key here holds the source of every recipe and helper as well."""
    if not isinstance(raw, Dataset):
        return lambda step: {}
    settings = json.dumps([dataset_fingerprint(raw), recipe, fmt, on_bad_row, options, _recipes_source()], default=repr)

    def keys(step: str) -> dict:
        return {"new_fingerprint": hashlib.sha256(f"{settings}/{step}".encode()).hexdigest()[:32]}

    return keys


def _desc(dataset, text: str) -> dict:
    return {"desc": text} if isinstance(dataset, Dataset) else {}  # IterableDataset.map takes no desc
