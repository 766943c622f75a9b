"""UltraFeedback: H4's binarized release (Zephyr's DPO set; the toy world shares its schema) and the raw
openbmb release, binarized here as Zephyr did."""

from __future__ import annotations

import hashlib
import random
from typing import Literal

from dpo_recipes.data.messages import message, number, preference_row, split_final_assistant_turn, text
from dpo_recipes.data.registry import BadRow, register


def binarized_tie(row: dict, keep_ties: bool = False) -> str | None:
    """Pairs whose two responses scored the same carry no preference: drop them (and count them)."""
    tied = row.get("score_chosen") is not None and row.get("score_chosen") == row.get("score_rejected")
    return "tied scores" if tied and not keep_ties else None


@register(
    "ultrafeedback_binarized",
    hub_id="HuggingFaceH4/ultrafeedback_binarized",
    splits=("train_prefs", "test_prefs"),
    drop_reason=binarized_tie,
)
def ultrafeedback_binarized(row: dict, fmt: str = "conversational", keep_ties: bool = False) -> dict:
    """UltraFeedback binarized (H4): message-list chosen/rejected; options: keep_ties (default drop, counted).

    The raw row has a *string* ``prompt`` beside *message-list* ``chosen``/``rejected``, a mix TRL cannot
    detect reliably, so the prompt is rebuilt as the turns before the final assistant turn (as the
    alignment-handbook does), and both completions must share that history.

    >>> user = {"role": "user", "content": "Hi"}
    >>> row = {"prompt": "Hi", "chosen": [user, {"role": "assistant", "content": "Hello!"}],
    ...        "rejected": [user, {"role": "assistant", "content": "Go away."}],
    ...        "score_chosen": 8.0, "score_rejected": 2.0, "prompt_id": "p1"}
    >>> ultrafeedback_binarized(row)["prompt"], ultrafeedback_binarized(row)["rejected"]
    ([{'role': 'user', 'content': 'Hi'}], [{'role': 'assistant', 'content': 'Go away.'}])
    """
    prompt, chosen = split_final_assistant_turn(row.get("chosen"), "chosen")
    rejected_prompt, rejected = split_final_assistant_turn(row.get("rejected"), "rejected")
    if rejected_prompt != prompt:
        raise BadRow("rejected", "its conversation history differs from the chosen one's")
    scores = {
        field: None if row.get(field) is None else number(row[field], field)
        for field in ("score_chosen", "score_rejected")
    }
    if None not in scores.values() and scores["score_chosen"] < scores["score_rejected"]:
        raise BadRow(
            "score_chosen",
            f"{scores['score_chosen']:g} is below score_rejected "
            f"{scores['score_rejected']:g}: the labels contradict the scores",
        )
    return preference_row(prompt, chosen["content"], rejected["content"], fmt, **scores, prompt_id=row.get("prompt_id"))


ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


def _completion_score(completion: object, index: int, na_ratings: str) -> float | None:
    """Mean of the fine-grained ratings (Zephyr's choice: the published overall_score had a bug).

    An aspect GPT-4 rated "N/A" is left out of the mean, as the binarizations built on this data average over
    the aspects that were rated; with ``na_ratings="drop"`` (or when no aspect was rated) the score is None and
    the row is left out, counted. A malformed completion is a BadRow.
    """
    field = f"completions[{index}]"
    if not isinstance(completion, dict):
        raise BadRow(field, f"expected a completion dict, got {type(completion).__name__}")
    text(completion.get("response"), f"{field}.response")
    annotations = completion.get("annotations")
    if not isinstance(annotations, dict):
        raise BadRow(f"{field}.annotations", "missing or not a dict")
    ratings = []
    for aspect in ASPECTS:
        judged = annotations.get(aspect)
        rating = judged.get("Rating") if isinstance(judged, dict) else None
        if rating == "N/A":
            if na_ratings == "drop":
                return None
            continue
        if not (isinstance(rating, str) and rating.strip().isdigit()):
            raise BadRow(f"{field}.annotations.{aspect}.Rating", f"expected a digit or 'N/A', got {rating!r}")
        ratings.append(int(rating))
    return sum(ratings) / len(ratings) if ratings else None


def _binarize(row: dict, rejected: str, seed: int, na_ratings: str) -> tuple[int, int, list[float]] | str:
    """Indices of the chosen and rejected completions and all scores, or the reason the row is unusable."""
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise BadRow("completions", f"expected a list of completions, got {type(completions).__name__}")
    if len(completions) < 2:
        return "fewer than 2 completions"
    scores = [_completion_score(completion, i, na_ratings) for i, completion in enumerate(completions)]
    if None in scores:
        return "N/A rating (na_ratings=drop)" if na_ratings == "drop" else "a completion with every aspect N/A"
    best = max(range(len(scores)), key=scores.__getitem__)
    others = [i for i in range(len(scores)) if i != best]
    if rejected == "worst":
        worst = min(others, key=scores.__getitem__)
    else:  # seeded by the instruction itself, so the choice does not depend on row order
        key = f"{seed}/{row.get('instruction')}".encode()
        worst = random.Random(hashlib.sha256(key).hexdigest()).choice(others)
    if scores[best] == scores[worst]:
        return "tie between chosen and rejected"
    return best, worst, scores


Rejected = Literal["random", "worst"]
NaRatings = Literal["skip", "drop"]


def raw_unusable(
    row: dict, rejected: Rejected = "random", seed: int = 42, na_ratings: NaRatings = "skip"
) -> str | None:
    outcome = _binarize(row, rejected, seed, na_ratings)
    return outcome if isinstance(outcome, str) else None


@register("ultrafeedback", hub_id="openbmb/UltraFeedback", splits=("train",), drop_reason=raw_unusable)
def ultrafeedback(
    row: dict,
    fmt: str = "conversational",
    rejected: Rejected = "random",
    seed: int = 42,
    na_ratings: NaRatings = "skip",
) -> dict:
    """openbmb/UltraFeedback (raw): best of 4 completions by mean rating; options rejected=random|worst, seed,
    na_ratings=skip|drop."""
    outcome = _binarize(row, rejected, seed, na_ratings)
    if isinstance(outcome, str):  # only reached when a drop reason was ignored
        raise BadRow("completions", outcome)
    best, worst, scores = outcome
    completions = row["completions"]
    return preference_row(
        [message("user", text(row.get("instruction"), "instruction"))],
        completions[best]["response"],
        completions[worst]["response"],
        fmt,
        score_chosen=scores[best],
        score_rejected=scores[worst],
        chosen_model=completions[best].get("model"),
        rejected_model=completions[worst].get("model"),
        source=row.get("source"),
    )
