"""The dataset-recipe registry and the one function that applies a recipe to a raw dataset.

A recipe is a small pure function from one raw row to one TRL preference row (``prompt``/``chosen``/
``rejected``), registered by name. It may also name a ``drop_reason``: rows it returns a reason for are left
out *and counted*, never dropped silently. A malformed row raises ``BadRow(field, problem)``; `prepare`
turns it into an error naming the dataset, the row index and the field.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from datasets import Dataset

logger = logging.getLogger(__name__)


class BadRow(ValueError):
    """A raw row a recipe cannot convert; raised by recipe functions with the offending field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field!r}: {problem}")
        self.field, self.problem = field, problem


class RecipeError(ValueError):
    """A bad row, located: which dataset, which recipe, which row, which field."""


@dataclass(frozen=True)
class DatasetRecipe:
    name: str
    convert: Callable[[dict], dict]
    drop_reason: Callable[[dict], str | None] | None = None

    @property
    def summary(self) -> str:
        return (self.convert.__doc__ or "").strip().splitlines()[0]


RECIPES: dict[str, DatasetRecipe] = {}


def register(name: str, drop_reason: Callable[[dict], str | None] | None = None):
    """Decorator: add a row-conversion function to the registry under ``name``."""

    def decorator(convert: Callable[[dict], dict]) -> Callable[[dict], dict]:
        if name in RECIPES:
            raise ValueError(f"dataset recipe {name!r} is registered twice")
        RECIPES[name] = DatasetRecipe(name, convert, drop_reason)
        return convert

    return decorator


def get_recipe(name: str) -> DatasetRecipe:
    if name not in RECIPES:
        raise KeyError(f"unknown dataset recipe {name!r}; valid recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


@dataclass
class PreparedSplit:
    """A split in TRL's preference format, and the account of every raw row that did not make it."""

    dataset: Dataset
    rows_read: int
    dropped: Counter = field(default_factory=Counter)

    def describe(self, label: str) -> str:
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.dropped.most_common()) or "none"
        dropped = sum(self.dropped.values())
        return f"{label}: read {self.rows_read} rows, kept {len(self.dataset)}, dropped {dropped} ({reasons})"


_ROW = "__row_index"
_DROP = "__drop_reason"


def prepare(raw: Dataset, recipe_name: str, dataset_label: str) -> PreparedSplit:
    """Apply a registered recipe to every row of ``raw``: count the rows it drops, convert the rest."""
    recipe = get_recipe(recipe_name)

    def annotate(row: dict, index: int) -> dict:
        reason = recipe.drop_reason(row) if recipe.drop_reason else None
        return {_ROW: index, _DROP: reason or ""}

    def convert(row: dict) -> dict:
        try:
            return recipe.convert({k: v for k, v in row.items() if k not in (_ROW, _DROP)})
        except BadRow as error:
            raise RecipeError(
                f"dataset {dataset_label!r} (recipe {recipe.name!r}), row {row[_ROW]}: {error}"
            ) from error

    annotated = raw.map(annotate, with_indices=True, desc=f"Checking {dataset_label}")
    dropped = Counter(reason for reason in annotated[_DROP] if reason)
    kept = annotated.filter(lambda row: not row[_DROP], desc=f"Dropping rows of {dataset_label}")
    converted = kept.map(convert, remove_columns=kept.column_names, desc=f"Converting {dataset_label}")
    prepared = PreparedSplit(converted, rows_read=len(raw), dropped=dropped)
    logger.info(prepared.describe(dataset_label))
    return prepared
