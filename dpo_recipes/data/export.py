"""A recipe's output as a dataset of its own: to inspect it, to train on it with `trl dpo`, to push it to the hub.

The splits are written in the hub's layout (``data/{split}-00000-of-00001.{parquet,jsonl}``), so that
``load_dataset(output)`` reads them back with their split names, or with ``save_to_disk`` (``load_from_disk``).
``account.json`` beside them says where the rows came from and what was left out of each split, and why. The
directory appears whole or not at all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from datasets import DatasetDict

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.files import atomic_directory
from dpo_recipes.data.loading import load_preference_splits

TARGETS = ("parquet", "jsonl", "disk")


def export_splits(
    dataset: str,
    recipe: str,
    splits: list[str],
    output: str | Path,
    to: str = "parquet",
    fmt: str = "conversational",
    on_bad_row: str = "error",
    max_rows: int | None = None,
    overwrite: bool = False,
    allow_same_rows: bool = False,
    **options,
) -> dict:
    """Convert ``splits`` of ``dataset`` through ``recipe`` and write them to ``output``; return the account.

    One local file stands for whatever split is asked, so several splits of it would be the same rows, and a
    later run would "evaluate" on its training data: refused, unless ``allow_same_rows`` (then labelled in the
    account)."""
    if to not in TARGETS:
        raise ConfigError(f"unknown target {to!r}; choose one of {TARGETS}")
    same_rows = Path(dataset).is_file() and len(set(splits)) > 1
    if same_rows and not allow_same_rows:
        raise ConfigError(
            f"dataset {dataset!r} is one file, so the splits {', '.join(splits)} would all hold its same rows "
            "(a test split that is the training data); write one with --split NAME, or pass --allow-same-rows "
            "to write them all, labelled as the same rows"
        )
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ConfigError(f"{output} exists and is not empty; choose another path or --overwrite")
    prepared = load_preference_splits(
        dataset,
        recipe,
        {split: split for split in splits},
        max_rows=dict.fromkeys(splits, max_rows),
        fmt=fmt,
        on_bad_row=on_bad_row,
        **options,
    )
    account = {
        "dataset": dataset,
        "recipe": recipe,
        "options": options,
        "format": fmt,
        **({"note": f"every split holds the same rows: one file ({dataset}) stands for each"} if same_rows else {}),
        "splits": {
            split: {"rows_read": p.rows_read, "rows_kept": p.rows_kept, "dropped": dict(p.dropped)}
            for split, p in prepared.items()
        },
    }
    replaced = output.with_name(f".{output.name}.replaced") if output.exists() else None
    target = output.with_name(f".{output.name}.new") if replaced else output
    with atomic_directory(target) as scratch:
        if to == "disk":
            DatasetDict({split: p.dataset for split, p in prepared.items()}).save_to_disk(str(scratch))
        for split, p in prepared.items():
            path = scratch / "data" / f"{split}-00000-of-00001.{to}"
            if to == "parquet":
                p.dataset.to_parquet(path)
            elif to == "jsonl":
                p.dataset.to_json(path, lines=True, force_ascii=False)
        (scratch / "account.json").write_text(json.dumps(account, indent=2, ensure_ascii=False) + "\n")
    if replaced:  # the new data is complete: only now does the old directory go
        output.rename(replaced)
        target.rename(output)
        shutil.rmtree(replaced)
    return account
