"""Data already in TRL's preference format: ``prompt``/``chosen``/``rejected``, standard or conversational, with
the prompt given or implicit in both completions (TRL's "Dataset formats" page; what `data convert` writes).

The four shapes, each read as TRL reads it:

- standard, explicit: ``{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}``;
- standard, implicit: ``{"chosen": "The sky is blue.", "rejected": "The sky is green."}``;
- conversational, explicit: a message-list ``prompt`` and one assistant message in each completion;
- conversational, implicit: two conversations that share every turn but the final assistant turn.

An implicit prompt is split on turns, not on characters. TRL's ``extract_prompt`` takes the longest common
prefix, character by character for strings, so two answers that begin alike ("It is blue." / "It is black.")
lose their shared start to the prompt, and a split can fall inside a word. Here a conversation's prompt is every
turn before the final assistant turn, an HH-style transcript is cut at its last ``"\\n\\nAssistant:"``, and a
plain string at the last whitespace before the answers differ. Each row's ``prompt_split`` column says which
split it got and whether TRL's ``extract_prompt`` would give the same rows (`TRL_SAME` / `TRL_DIFFERS`), so the
cases where they differ can be counted (`dpo-recipes data preview`, or ``Counter(dataset["prompt_split"])``).

An empty completion is data, as in TRL (HH's harmless-base prefers silence at times) and as `data convert`
writes it; an empty prompt is not. Rows that carry ``images`` or ``tools`` are refused with that reason: this
project trains text-only chat policies. Every other column is kept as it is (``keep_columns`` names the ones to
keep instead).
"""

from __future__ import annotations

from dpo_recipes.data.hh_rlhf import HUMAN, parse_transcript, split_transcripts
from dpo_recipes.data.messages import (
    check_messages,
    common_prefix,
    message,
    preference_row,
    split_final_assistant_turn,
    text,
)
from dpo_recipes.data.registry import BadRow, RecipeError, register

GIVEN = "given"
TRL_SAME = "implicit; TRL's extract_prompt splits alike"
TRL_DIFFERS = "implicit; TRL's extract_prompt splits elsewhere"
UNSUPPORTED = ("images", "tools")
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


def _refuse_unsupported(row: dict) -> None:
    for field in UNSUPPORTED:
        if row.get(field) not in (None, [], ""):
            raise BadRow(field, f"rows with {field} are not supported (text-only preference data)")


def _one_assistant_turn(messages: object, field: str) -> str:
    """The text of a conversational completion: exactly one assistant message."""
    turns = check_messages(messages, field)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        roles = [turn["role"] for turn in turns]
        raise BadRow(field, f"expected one assistant message as the completion, got the roles {roles}")
    return text(turns[0]["content"], f"{field}[0].content", allow_empty=True)


def _split_conversations(chosen: object, rejected: object) -> tuple[list[dict], str, str]:
    prompt, chosen_turn = split_final_assistant_turn(chosen, "chosen")
    rejected_prompt, rejected_turn = split_final_assistant_turn(rejected, "rejected")
    if rejected_prompt != prompt:
        raise BadRow("rejected", "its turns before the final assistant turn differ from the chosen one's")
    return prompt, chosen_turn["content"], rejected_turn["content"]


def _split_strings(chosen: str, rejected: str) -> tuple[str, str, str]:
    """A transcript on its last shared assistant marker; plain text at the last whitespace before the answers
    differ (so that a word is never cut)."""
    if chosen.startswith(HUMAN) and rejected.startswith(HUMAN):
        return split_transcripts(chosen, rejected)
    shared = common_prefix(chosen, rejected)
    cut = max(shared.rfind(space) for space in " \n\t")
    if cut <= 0:
        raise BadRow("chosen", "chosen and rejected share no prompt (no common beginning before a space)")
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _standard(prompt: str, chosen: str, rejected: str, fmt: str) -> dict:
    """Strings stay exactly as given in the standard format; the other formats get chat turns."""
    if fmt == "standard":
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    turns = parse_transcript(prompt) if prompt.startswith(HUMAN) else [message("user", prompt)]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns = turns[:-1]  # the transcript's open "Assistant:" marker is the generation prompt
    return preference_row(turns, chosen.strip(), rejected.strip(), fmt)


@register("trl", splits=("train", "test"))
def trl(row: dict, fmt: str = "conversational", keep_columns: str | None = None) -> dict:
    """TRL's own preference format (standard or conversational, explicit or implicit prompt); see the module."""
    _refuse_unsupported(row)
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    conversational = isinstance(chosen, list)
    if isinstance(rejected, list) != conversational:
        raise BadRow("rejected", "chosen and rejected must both be message lists or both be text")
    if isinstance(prompt, list) and not conversational:  # TRL would drop such a prompt and split the texts
        raise BadRow(
            "prompt", "a message-list prompt with text completions: give chosen/rejected as assistant messages"
        )
    explicit = prompt is not None and isinstance(prompt, list) == conversational  # as TRL's maybe_extract_prompt
    if conversational and explicit:
        turns, answers = check_messages(prompt, "prompt"), (_one_assistant_turn(chosen, "chosen"),)
        converted = preference_row(turns, *answers, _one_assistant_turn(rejected, "rejected"), fmt)
    elif conversational:
        turns, chosen_text, rejected_text = _split_conversations(chosen, rejected)
        converted = preference_row(turns, chosen_text, rejected_text, fmt)
        ours = (turns, [message("assistant", chosen_text)], [message("assistant", rejected_text)])
    elif explicit:
        answers = (text(chosen, "chosen", allow_empty=True), text(rejected, "rejected", allow_empty=True))
        converted = _standard(text(prompt, "prompt"), *answers, fmt)
    else:
        ours = _split_strings(text(chosen, "chosen"), text(rejected, "rejected"))
        converted = _standard(*ours, fmt)
    split = GIVEN if explicit else _compared_with_trl(chosen, rejected, ours)
    return {**converted, **_extra_columns(row, keep_columns), "prompt_split": split}


def _compared_with_trl(chosen, rejected, ours: tuple) -> str:
    """Whether TRL's ``extract_prompt`` splits this implicit pair as we did (compared on roles and text)."""
    from trl.data_utils import extract_prompt  # imports transformers and torch: only implicit rows need it

    theirs = extract_prompt({"chosen": chosen, "rejected": rejected})
    same = _flat(tuple(theirs[field] for field in PREFERENCE_FIELDS)) == _flat(ours)
    return TRL_SAME if same else TRL_DIFFERS


def _flat(split: tuple) -> tuple:
    def flat(value):
        if isinstance(value, list):
            return "".join(f"\0{turn.get('role')}\0{turn.get('content')}" for turn in value)
        return value

    return tuple(flat(part) for part in split)


def _extra_columns(row: dict, keep_columns: str | None) -> dict:
    """Every column that is not part of the pair, or only those named (comma-separated) in ``keep_columns``."""
    extra = {key: value for key, value in row.items() if key not in (*PREFERENCE_FIELDS, *UNSUPPORTED, "prompt_split")}
    if keep_columns is None:
        return extra
    named = [name.strip() for name in keep_columns.split(",") if name.strip()]
    missing = [name for name in named if name not in extra]
    if missing:
        raise RecipeError(
            f"recipe 'trl': keep_columns names {missing[0]!r}, a column the data does not have; "
            f"its other columns: {sorted(extra) or 'none'}"
        )
    return {name: extra[name] for name in named}
