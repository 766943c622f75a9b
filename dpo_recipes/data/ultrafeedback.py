"""HuggingFaceH4/ultrafeedback_binarized (Zephyr's DPO set), and the toy world that shares its schema."""

from __future__ import annotations

from dpo_recipes.data.messages import split_final_assistant_turn
from dpo_recipes.data.registry import BadRow, register


def score_tie(row: dict) -> str | None:
    """Pairs whose two responses scored the same carry no preference: drop them (and count them)."""
    if row.get("score_chosen") is not None and row.get("score_chosen") == row.get("score_rejected"):
        return "tied scores"
    return None


@register("ultrafeedback_binarized", drop_reason=score_tie)
def ultrafeedback_binarized(row: dict) -> dict:
    """UltraFeedback binarized (H4): message-list chosen/rejected → conversational prompt/chosen/rejected.

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
    return {
        "prompt": prompt,
        "chosen": [chosen],
        "rejected": [rejected],
        "score_chosen": float(row["score_chosen"]) if row.get("score_chosen") is not None else None,
        "score_rejected": float(row["score_rejected"]) if row.get("score_rejected") is not None else None,
        "prompt_id": row.get("prompt_id"),
    }
