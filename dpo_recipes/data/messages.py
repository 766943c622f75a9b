"""Checks and reshapes for chat message lists (``[{"role": ..., "content": ...}, ...]``)."""

from __future__ import annotations

from dpo_recipes.data.registry import BadRow

ROLES = ("system", "user", "assistant")


def check_messages(messages: object, field: str) -> list[dict]:
    """Return ``messages`` if it is a non-empty list of {role, content} turns with known roles and text."""
    if not isinstance(messages, list) or not messages:
        raise BadRow(field, f"expected a non-empty list of messages, got {type(messages).__name__}")
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
            raise BadRow(field, f"turn {turn} is not a {{'role', 'content'}} message: {message!r:.80}")
        if message["role"] not in ROLES:
            raise BadRow(field, f"turn {turn} has unknown role {message['role']!r}; expected one of {ROLES}")
        if not isinstance(message["content"], str):
            raise BadRow(field, f"turn {turn} content is {type(message['content']).__name__}, not text")
    return messages


def split_final_assistant_turn(messages: object, field: str) -> tuple[list[dict], dict]:
    """Split a conversation into its history (the prompt) and its final assistant turn (the completion)."""
    messages = check_messages(messages, field)
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise BadRow(field, "expected a conversation ending on an assistant turn after at least one prompt turn")
    if not messages[-1]["content"].strip():
        raise BadRow(field, "the final assistant turn is empty")
    return [dict(role=m["role"], content=m["content"]) for m in messages[:-1]], dict(messages[-1])


def messages_to_prompt_completion(row: dict) -> dict:
    """SFT rows: ``messages`` → conversational ``prompt``/``completion``, so the loss covers the reply only."""
    prompt, completion = split_final_assistant_turn(row["messages"], "messages")
    return {"prompt": prompt, "completion": [completion]}
