"""nvidia/HelpSteer2: scored single responses (paired by prompt), or its preference file."""

from __future__ import annotations

import typing
from typing import Literal

from datasets import Dataset

from dpo_recipes.data.messages import message, number, preference_row, text
from dpo_recipes.data.registry import BadRow, register

Attribute = Literal["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
ATTRIBUTES = typing.get_args(Attribute)


def pair_consecutive_rows(raw: Dataset, **options) -> Dataset:
    """Responses to the same prompt come in consecutive rows: turn rows 2k and 2k+1 into one pair row k.

    Row numbers in this recipe's errors therefore count pairs: row k is raw rows 2k and 2k+1.
    """
    columns = ["prompt", "response", *ATTRIBUTES]

    def pair(batch: dict) -> dict:  # a batch of two rows (one at the very end of an odd-sized file)
        def value(column: str, i: int) -> list:
            return [batch[column][i] if column in batch and i < len(batch["prompt"]) else None]

        return {f"{column}_{side}": value(column, i) for column in columns for side, i in (("a", 0), ("b", 1))}

    return raw.map(pair, batched=True, batch_size=2, remove_columns=raw.column_names)


def helpsteer2_unusable(row: dict, score: Attribute = "helpfulness") -> str | None:
    if row.get("prompt_b") is None and row.get("response_b") is None:
        return "unpaired last response"
    a, b = row.get(f"{score}_a"), row.get(f"{score}_b")
    if a is not None and a == b:
        return f"tied {score}"
    return None


@register(
    "helpsteer2",
    hub_id="nvidia/HelpSteer2",
    splits=("train", "validation"),
    drop_reason=helpsteer2_unusable,
    regroup=pair_consecutive_rows,
)
def helpsteer2(row: dict, fmt: str = "conversational", score: Attribute = "helpfulness") -> dict:
    """HelpSteer2 main files: consecutive responses to one prompt paired; option score= attribute (helpfulness)."""
    prompt = text(row.get("prompt_a"), "prompt")
    if row.get("prompt_b") != prompt:
        raise BadRow("prompt", "the two responses of this pair answer different prompts (rows not in pairs?)")
    scores = {side: number(row.get(f"{score}_{side}"), f"{score} of response {side}") for side in "ab"}
    better, worse = ("a", "b") if scores["a"] > scores["b"] else ("b", "a")
    return preference_row(
        [message("user", prompt)],
        text(row.get(f"response_{better}"), "response"),
        text(row.get(f"response_{worse}"), "response"),
        fmt,
        score_chosen=float(scores[better]),
        score_rejected=float(scores[worse]),
    )


PREFERENCE_SPLITS = ("train", "val")  # the values of the preference file's `split` column


def no_preference(row: dict, keep_split: Literal["train", "val", "all"] = "train") -> str | None:
    """The preference file holds the train *and* the validation pairs, told apart by its ``split`` column
    ("train" / "val"). Training on the "val" rows would leak the held-out set the card warns about, so by
    default only "train" rows are kept; the others are counted."""
    split = row.get("split")
    if split not in PREFERENCE_SPLITS:
        raise BadRow("split", f"expected one of {PREFERENCE_SPLITS}, got {split!r}")
    if keep_split != "all" and split != keep_split:
        return f"split is {split} (keep_split={keep_split})"
    return "no preference (strength 0)" if row.get("preference_strength") == 0 else None


@register("helpsteer2_preference", hub_id="nvidia/HelpSteer2", splits=("train",), drop_reason=no_preference)
def helpsteer2_preference(
    row: dict, fmt: str = "conversational", keep_split: Literal["train", "val", "all"] = "train"
) -> dict:
    """HelpSteer2 preference file: strength -3..3 (negative: response_1 better); 0 dropped; keep_split train|val|all."""
    strength = row.get("preference_strength")
    if isinstance(strength, bool) or not isinstance(strength, int) or not -3 <= strength <= 3:
        raise BadRow("preference_strength", f"expected an integer in -3..3, got {strength!r}")
    better, worse = ("response_1", "response_2") if strength < 0 else ("response_2", "response_1")
    return preference_row(
        [message("user", text(row.get("prompt"), "prompt"))],
        text(row.get(better), better),
        text(row.get(worse), worse),
        fmt,
        preference_strength=strength,
    )
