"""Raw rows in public datasets' schemas, for the data this project writes itself (the toy world, on-policy
pairs), so that the same dataset recipes read them as they read the real datasets."""

from __future__ import annotations

import hashlib


def ultrafeedback_binarized_row(
    prompt: str,
    chosen: str,
    rejected: str,
    score_chosen: float,
    score_rejected: float,
    prompt_key: str | None = None,
    **extra,
) -> dict:
    """A row of HuggingFaceH4/ultrafeedback_binarized: string ``prompt``, hashed ``prompt_id``, message-list
    ``chosen``/``rejected``/``messages`` (the chosen conversation) and the two scores."""
    user = {"role": "user", "content": prompt}
    chosen_messages = [user, {"role": "assistant", "content": chosen}]
    return {
        "prompt": prompt,
        "prompt_id": hashlib.sha256((prompt_key or prompt).encode()).hexdigest(),
        "chosen": chosen_messages,
        "rejected": [user, {"role": "assistant", "content": rejected}],
        "messages": chosen_messages,
        "score_chosen": score_chosen,
        "score_rejected": score_rejected,
        **extra,
    }
