"""ShareGPT-style preference pairs (LLaMA-Factory's ``ranking`` format).

Real ShareGPT exports carry the odd corrupted character: a terminal escape (U+001B) or a backspace pasted
with a shell session, a NUL from a broken export. Such a pair is valid data the recipe declines to train on (a
tokenizer turns those characters into tokens nobody meant): it is left out and counted, not an error that stops
the run. A malformed turn (unknown speaker, missing text) is still an error.
"""

from __future__ import annotations

from dpo_recipes.data.messages import control_character, message, preference_row, text
from dpo_recipes.data.registry import BadRow, DropRow, register

SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}
CORRUPTED = "a corrupted character (a control character in the text)"


def _turn(turn: object, field: str) -> dict:
    if not isinstance(turn, dict) or not {"from", "value"} <= turn.keys():
        raise BadRow(field, "expected a {'from', 'value'} turn", f"{turn!r:.80}")
    if turn["from"] not in SHAREGPT_ROLES:
        raise BadRow(field, f"unknown speaker {turn['from']!r}; expected one of {sorted(SHAREGPT_ROLES)}")
    if isinstance(turn["value"], str) and control_character(turn["value"]):
        raise DropRow(CORRUPTED)
    return message(SHAREGPT_ROLES[turn["from"]], text(turn["value"], field, allow_empty=turn["from"] == "system"))


@register("sharegpt_pairs", splits=("train",))
def sharegpt_pairs(row: dict, fmt: str = "conversational") -> dict:
    """ShareGPT ranking format: conversations (system/human/gpt turns) ending on a human turn + chosen/rejected."""
    conversations = row.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise BadRow("conversations", f"expected a non-empty list of turns, got {type(conversations).__name__}")
    prompt = [_turn(turn, f"conversations[{i}]") for i, turn in enumerate(conversations)]
    if prompt[-1]["role"] != "user":
        raise BadRow("conversations", "the history must end on a human turn")
    chosen, rejected = _turn(row.get("chosen"), "chosen"), _turn(row.get("rejected"), "rejected")
    for field, reply in (("chosen", chosen), ("rejected", rejected)):
        if reply["role"] != "assistant":
            raise BadRow(field, f"expected a gpt turn, got a {reply['role']} turn")
    return preference_row(prompt, chosen["content"], rejected["content"], fmt)
