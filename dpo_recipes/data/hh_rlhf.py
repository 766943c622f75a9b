"""Anthropic/hh-rlhf: whole transcripts (``"\\n\\nHuman: …\\n\\nAssistant: …"``) in ``chosen`` and ``rejected``."""

from __future__ import annotations

import os
import re

from dpo_recipes.data.messages import message, preference_row, text
from dpo_recipes.data.registry import BadRow, register

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


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
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(ASSISTANT)
    if cut < 0:
        raise BadRow("chosen", "no assistant turn shared by chosen and rejected")
    prompt = shared[: cut + len(ASSISTANT)]
    replies = chosen[len(prompt) :], rejected[len(prompt) :]
    for field, reply in zip(("chosen", "rejected"), replies, strict=True):
        if HUMAN in reply:
            raise BadRow(field, "the transcripts differ before their final assistant turn")
        if not reply.strip():
            raise BadRow(field, "the final assistant reply is empty")
    return prompt, *replies


def parse_transcript(transcript: str) -> list[dict]:
    """``"\\n\\nHuman: hi\\n\\nAssistant: yo"`` → user/assistant messages (one space after a marker is dropped)."""
    parts = _TURN.split(transcript)
    if parts[0]:
        raise BadRow("chosen", "text before the first turn marker", repr(parts[0][:40]))
    return [message(_ROLE[label], body.removeprefix(" ")) for label, body in zip(parts[1::2], parts[2::2], strict=True)]


@register("hh_rlhf", hub_id="Anthropic/hh-rlhf", splits=("train", "test"))
def hh_rlhf(row: dict, fmt: str = "conversational") -> dict:
    """Anthropic HH-RLHF transcripts, split on turn markers (use data_dir for helpful-base, harmless-base, …)."""
    prompt, chosen, rejected = split_transcripts(
        text(row.get("chosen"), "chosen"), text(row.get("rejected"), "rejected")
    )
    if fmt == "standard":  # the transcript text itself: prompt + chosen == the original chosen, exactly
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return preference_row(parse_transcript(prompt)[:-1], chosen.removeprefix(" "), rejected.removeprefix(" "), fmt)
