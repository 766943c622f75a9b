"""Load a raw preference dataset (hub id, local path or embedded name) and apply its recipe to each split."""

from __future__ import annotations

from datasets import load_dataset

from dpo_recipes import embedded
from dpo_recipes.data.registry import PreparedSplit, prepare


def load_preference_splits(
    dataset_name: str,
    recipe: str,
    splits: dict[str, str],
    dataset_config: str | None = None,
    max_rows: dict[str, int | None] | None = None,
) -> dict[str, PreparedSplit]:
    """``splits`` maps a role ("train", "test") to a split name of the raw dataset.

    ``max_rows`` optionally caps how many raw rows of a role are read (the first N, for quick runs).
    """
    path = embedded.resolve(dataset_name)
    prepared = {}
    for role, split in splits.items():
        raw = load_dataset(path, name=dataset_config, split=split)
        limit = (max_rows or {}).get(role)
        if limit is not None:
            raw = raw.select(range(min(limit, len(raw))))
        prepared[role] = prepare(raw, recipe, dataset_label=f"{dataset_name}[{split}]")
    return prepared
