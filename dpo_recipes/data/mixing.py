"""Dataset mixtures, as in the alignment-handbook: several recipes, each with a fraction of its train split,
concatenated into one train/test pair, deterministically for a seed.

Each entry keeps ``prompt``/``chosen``/``rejected`` and gains a ``source`` column (recipe metadata columns
differ between datasets, so they are not carried into a mixture). Rows an entry's fraction leaves out are
counted like any other drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset, concatenate_datasets

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.data.loading import load_preference_splits
from dpo_recipes.data.registry import PreparedSplit, get_recipe

COLUMNS = ["prompt", "chosen", "rejected"]


@dataclass
class MixtureEntry:
    dataset: str  # hub id, local path or embedded name
    recipe: str
    fraction: float = 1.0  # of the train split
    train_split: str | None = None  # default: the recipe's first split
    test_split: str | None = "default"  # the recipe's second split (if any); None: no test split
    config: str | None = None
    data_dir: str | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"mixture entry {self.dataset!r}: fraction must be in (0, 1], got {self.fraction}")
        splits = get_recipe(self.recipe).splits
        self.train_split = self.train_split or splits[0]
        if self.test_split == "default":
            self.test_split = splits[1] if len(splits) > 1 else None


def _tagged(dataset: Dataset, source: str) -> Dataset:
    return dataset.select_columns(COLUMNS).add_column("source", [source] * len(dataset))


def mix(
    entries: list[MixtureEntry | dict],
    fmt: str = "conversational",
    seed: int = 42,
    on_bad_row: str = "error",
) -> dict[str, PreparedSplit]:
    """One train and one test PreparedSplit from all entries (test: each entry's whole test split)."""
    entries = [entry if isinstance(entry, MixtureEntry) else MixtureEntry(**entry) for entry in entries]
    parts: dict[str, list[Dataset]] = {"train": [], "test": []}
    accounts = {role: PreparedSplit(None, rows_read=0) for role in parts}
    for entry in entries:
        splits = {"train": entry.train_split, **({"test": entry.test_split} if entry.test_split else {})}
        prepared = load_preference_splits(
            entry.dataset,
            entry.recipe,
            splits,
            entry.config,
            entry.data_dir,
            fmt=fmt,
            on_bad_row=on_bad_row,
            **entry.options,
        )
        for role, split in prepared.items():
            dataset = split.dataset
            if role == "train" and entry.fraction < 1.0:
                taken = int(entry.fraction * len(dataset))
                split.dropped[f"left out by fraction {entry.fraction:g}"] += len(dataset) - taken
                dataset = dataset.shuffle(seed=seed).select(range(taken))
            parts[role].append(_tagged(dataset, entry.dataset))
            accounts[role].rows_read += split.rows_read
            accounts[role].dropped.update({f"{entry.dataset}: {reason}": n for reason, n in split.dropped.items()})
    for role, datasets in parts.items():
        if datasets:
            features = datasets[0].features
            mixed = concatenate_datasets([dataset.cast(features) for dataset in datasets])
            accounts[role].dataset = mixed.shuffle(seed=seed) if role == "train" else mixed
        else:
            accounts[role].dataset = Dataset.from_dict({column: [] for column in [*COLUMNS, "source"]})
    return accounts
