"""Where the cross-check's fixed batch comes from (`CheckData`): light to import, since the command line's help
shows its defaults."""

from __future__ import annotations

from dataclasses import dataclass

from dpo_recipes.data import load_preference_splits
from dpo_recipes.worlds.names import TINY_SFT, WORLD


@dataclass(frozen=True)
class CheckData:
    """Where the fixed batch comes from. The defaults, the embedded model and world, are those of
    `dpo-recipes crosscheck` and of the check every run makes of its own loss settings."""

    model: str = TINY_SFT
    dataset: str = WORLD
    recipe: str = "ultrafeedback_binarized"
    split: str = "test_prefs"
    n_pairs: int = 8
    max_length: int | None = 1024  # TRL's default
    truncation_mode: str = "keep_start"

    def pairs(self, start: int = 0):
        """``n_pairs`` kept pairs of the split from the ``start``-th on (4× as many raw rows are read, to allow for
        drops)."""
        end = start + self.n_pairs
        splits = load_preference_splits(self.dataset, self.recipe, {"batch": self.split}, max_rows={"batch": 4 * end})
        data = splits["batch"].dataset
        return data.select(range(min(start, len(data)), min(end, len(data))))
