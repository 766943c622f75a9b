"""Anthropic/hh-rlhf: whole transcripts (``"\\n\\nHuman: …\\n\\nAssistant: …"``) in ``chosen`` and ``rejected``.

Real transcripts are not always regular, and the recipe says what it does with each quirk:

- A final reply may be empty. In harmless-base the silent reply is often the chosen, harmless one, so empty
  replies are kept as the data they are (``empty_replies="drop"`` leaves them out, counted).
- A final reply may hold a turn marker. With ``"\\n\\nHuman:"`` the two transcripts differ before their final
  turn: there is no single reply to prefer, and the pair is left out, counted. With ``"\\n\\nAssistant:"`` (a
  reply that continues as a second assistant turn) the standard format keeps the text exactly; the
  conversational format cannot hold it in one message without merging turns, so it leaves the pair out, counted.
- The history may hold two assistant turns in a row or an empty human turn, which chat templates that require
  alternating roles reject. ``irregular_turns`` decides: ``"merge"`` (the default) leaves out empty turns and
  joins consecutive turns of one speaker with a blank line, as the transcript shows them; ``"keep"`` emits the
  turns as they are; ``"drop"`` leaves such pairs out, counted. The standard format keeps the transcript text.
"""

from __future__ import annotations

import re
from typing import Literal

from dpo_recipes.data.messages import common_prefix, message, preference_row, text, visible
from dpo_recipes.data.registry import BadRow, DropRow, register

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
EMPTY_REPLY = "empty final reply (empty_replies=drop)"
DIVERGED = "the transcripts differ before their final turn (a reply holds '\\n\\nHuman:')"
SPLIT_REPLY = "a final reply holds '\\n\\nAssistant:' (one message would merge two turns)"
IRREGULAR = "consecutive turns of one speaker or empty turns (irregular_turns=drop)"
NO_USER_TURN = "the final reply does not answer a human turn (after merging irregular turns)"


def split_transcripts(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two transcripts into their shared prompt and the two final replies, on a turn marker.

    The prompt ends at the last ``"\\n\\nAssistant:"`` inside the common prefix of both transcripts, so the
    split never cuts into a word (unlike a character-wise common prefix) and prompt + reply reproduces each
    transcript exactly.

    >>> split_transcripts("\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "\\n\\nHuman: Hi\\n\\nAssistant: Help yourself.")
    ('\\n\\nHuman: Hi\\n\\nAssistant:', ' Hello!', ' Help yourself.')
    """
    for field, transcript in (("chosen", chosen), ("rejected", rejected)):
        if not transcript.startswith(HUMAN):
            raise BadRow(field, f"transcript does not start with {HUMAN!r}", repr(transcript[:40]))
    shared = common_prefix(chosen, rejected)
    cut = shared.rfind(ASSISTANT)
    if cut < 0:
        raise BadRow("chosen", "no assistant turn shared by chosen and rejected")
    prompt = shared[: cut + len(ASSISTANT)]
    replies = chosen[len(prompt) :], rejected[len(prompt) :]
    if any(HUMAN in reply for reply in replies):
        raise DropRow(DIVERGED)
    return prompt, *replies


def parse_transcript(transcript: str) -> list[dict]:
    """``"\\n\\nHuman: hi\\n\\nAssistant: yo"`` → user/assistant messages (one space after a marker is dropped)."""
    parts = _TURN.split(transcript)
    if parts[0]:
        raise BadRow("chosen", "text before the first turn marker", repr(parts[0][:40]))
    return [message(_ROLE[label], body.removeprefix(" ")) for label, body in zip(parts[1::2], parts[2::2], strict=True)]


def is_regular(turns: list[dict]) -> bool:
    """User first, roles alternating, no empty turn: what every chat template accepts."""
    roles_alternate = all(turn["role"] == ("user", "assistant")[i % 2] for i, turn in enumerate(turns))
    return roles_alternate and all(visible(turn["content"]) for turn in turns)


def merge_turns(turns: list[dict]) -> list[dict]:
    """Empty turns left out, consecutive turns of one speaker joined by a blank line.

    >>> merge_turns([message("user", "Hi"), message("assistant", "A"), message("assistant", "B"), message("user", "")])
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'A\\n\\nB'}]
    """
    merged: list[dict] = []
    for turn in turns:
        if not visible(turn["content"]):
            continue
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1] = message(turn["role"], f"{merged[-1]['content']}\n\n{turn['content']}")
        else:
            merged.append(message(turn["role"], turn["content"]))
    return merged


def history(prompt: str, irregular_turns: str) -> list[dict]:
    """The prompt's turns before the final reply, under the ``irregular_turns`` policy."""
    turns = parse_transcript(prompt)[:-1]  # the last is the empty "\n\nAssistant:" the reply follows
    if is_regular(turns) and turns[-1]["role"] == "user" or irregular_turns == "keep":
        return turns
    if irregular_turns == "drop":
        raise DropRow(IRREGULAR)
    merged = merge_turns(turns)
    if not merged or merged[0]["role"] != "user" or merged[-1]["role"] != "user":
        raise DropRow(NO_USER_TURN)
    return merged


@register("hh_rlhf", hub_id="Anthropic/hh-rlhf", splits=("train", "test"))
def hh_rlhf(
    row: dict,
    fmt: str = "conversational",
    empty_replies: Literal["keep", "drop"] = "keep",
    irregular_turns: Literal["merge", "keep", "drop"] = "merge",
) -> dict:
    """Anthropic HH-RLHF transcripts, split on turn markers (use data_dir for helpful-base, harmless-base, …)."""
    prompt, chosen, rejected = split_transcripts(
        text(row.get("chosen"), "chosen"), text(row.get("rejected"), "rejected")
    )
    if empty_replies == "drop" and not (visible(chosen) and visible(rejected)):
        raise DropRow(EMPTY_REPLY)
    if fmt != "conversational":  # the transcript text itself: prompt + chosen == the original chosen, exactly
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if ASSISTANT in chosen or ASSISTANT in rejected:
        raise DropRow(SPLIT_REPLY)
    return preference_row(history(prompt, irregular_turns), chosen.removeprefix(" "), rejected.removeprefix(" "), fmt)
