"""Datasets with one prompt (and maybe a system prompt) and two text replies per row."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from datasets import Dataset

from dpo_recipes.data.messages import message, preference_row, text, with_system
from dpo_recipes.data.registry import BadRow, register


def _pair(row: dict, prompt_field: str, chosen_field: str, rejected_field: str, system_field: str | None) -> tuple:
    prompt = [message("user", text(row.get(prompt_field), prompt_field))]
    if system_field:
        prompt = with_system(row.get(system_field), prompt, system_field)
    return prompt, text(row.get(chosen_field), chosen_field), text(row.get(rejected_field), rejected_field)


@register("truthy_dpo", hub_id="jondurbin/truthy-dpo-v0.1", splits=("train",))
def truthy_dpo(row: dict, fmt: str = "conversational") -> dict:
    """jondurbin/truthy-dpo: prompt, chosen, rejected strings, with its system prompt kept as a system turn."""
    prompt, chosen, rejected = _pair(row, "prompt", "chosen", "rejected", "system")
    return preference_row(prompt, chosen, rejected, fmt, id=row.get("id"), source=row.get("source"))


@register("orca_dpo_pairs", hub_id="Intel/orca_dpo_pairs", splits=("train",))
def orca_dpo_pairs(row: dict, fmt: str = "conversational") -> dict:
    """Intel/orca_dpo_pairs: system (may be empty), question, chosen, rejected strings."""
    return preference_row(*_pair(row, "question", "chosen", "rejected", "system"), fmt)


@register("plain", splits=("train", "test"))
def plain(
    row: dict,
    fmt: str = "conversational",
    prompt_column: str = "prompt",
    chosen_column: str = "chosen",
    rejected_column: str = "rejected",
    system_column: str | None = None,
) -> dict:
    """Your own JSONL/CSV/parquet: text columns named by options prompt_column, chosen_column, … system_column."""
    return preference_row(*_pair(row, prompt_column, chosen_column, rejected_column, system_column), fmt)


def _binary(row: dict, field: str) -> int:
    value = row.get(field)
    if value not in (0, 1) or isinstance(value, float):
        raise BadRow(field, f"expected 0 or 1, got {value!r}")
    return int(value)


PKU_PREFERENCE = {"helpfulness": "better_response_id", "safety": "safer_response_id"}


def unsafe_safer_response(
    row: dict, prefer: Literal["helpfulness", "safety"] = "helpfulness", safe_chosen_only: bool = True
) -> str | None:
    """With prefer=safety, a pair whose safer response is unsafe too teaches the policy toward an unsafe answer:
    left out and counted, as safety-preference training sets filter them, unless ``safe_chosen_only`` is off."""
    if prefer != "safety" or not safe_chosen_only:
        return None
    safer = _binary(row, "safer_response_id")
    if row.get(f"is_response_{safer}_safe") is False:
        return "both responses unsafe (safe_chosen_only)"
    return None


@register(
    "pku_saferlhf", hub_id="PKU-Alignment/PKU-SafeRLHF", splits=("train", "test"), drop_reason=unsafe_safer_response
)
def pku_saferlhf(
    row: dict,
    fmt: str = "conversational",
    prefer: Literal["helpfulness", "safety"] = "helpfulness",
    safe_chosen_only: bool = True,
) -> dict:
    """PKU-SafeRLHF: two responses, preferred by prefer=helpfulness (default) or safety (safe_chosen_only)."""
    better = _binary(row, PKU_PREFERENCE[prefer])
    chosen, rejected = f"response_{better}", f"response_{1 - better}"
    prompt, chosen_text, rejected_text = _pair(row, "prompt", chosen, rejected, None)
    return preference_row(
        prompt,
        chosen_text,
        rejected_text,
        fmt,
        chosen_is_safe=row.get(f"is_{chosen}_safe"),
        rejected_is_safe=row.get(f"is_{rejected}_safe"),
    )


_RANK_IN_POST = "__pair_rank_in_post"


def shp_rank_pairs(raw: Dataset, **options) -> Dataset:
    """Number each pair within its post, in dataset order, for the max_pairs_per_post cap."""
    if options.get("max_pairs_per_post") is None:
        return raw
    seen: Counter = Counter()

    def rank(row: dict) -> dict:
        seen[row.get("post_id")] += 1
        return {_RANK_IN_POST: seen[row.get("post_id")]}

    return raw.map(rank)  # sequential on purpose: the rank depends on the rows before


def shp_filtered(row: dict, min_score_ratio: float | None = None, max_pairs_per_post: int | None = None) -> str | None:
    """The SHP card's advice, as options: a minimum score ratio (it suggests 2) and a cap of pairs per post (5)."""
    ratio = row.get("score_ratio")
    if min_score_ratio is not None and isinstance(ratio, (int, float)) and ratio < min_score_ratio:
        return f"score ratio below {min_score_ratio:g}"
    if max_pairs_per_post is not None and row.get(_RANK_IN_POST, 0) > max_pairs_per_post:
        return f"more than {max_pairs_per_post} pairs for its post"
    return None


@register("shp", hub_id="stanfordnlp/SHP", splits=("train", "test"), drop_reason=shp_filtered, regroup=shp_rank_pairs)
def shp(
    row: dict, fmt: str = "conversational", min_score_ratio: float | None = None, max_pairs_per_post: int | None = None
) -> dict:
    """stanfordnlp/SHP: Reddit post + two comments, chosen by labels; options min_score_ratio, max_pairs_per_post."""
    a_preferred = _binary(row, "labels") == 1
    chosen, rejected = ("A", "B") if a_preferred else ("B", "A")
    prompt, chosen_text, rejected_text = _pair(row, "history", f"human_ref_{chosen}", f"human_ref_{rejected}", None)
    return preference_row(
        prompt,
        chosen_text,
        rejected_text,
        fmt,
        post_id=row.get("post_id"),
        domain=row.get("domain"),
        score_ratio=row.get("score_ratio"),
        score_chosen=row.get(f"score_{chosen}"),
        score_rejected=row.get(f"score_{rejected}"),
    )
