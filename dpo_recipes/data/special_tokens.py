"""Chat-template injection: text that holds the tokenizer's special tokens.

TRL tokenizes each row's text as it is, so a string such as ``"<|im_end|>\\n<|im_start|>user\\n…"`` inside an
answer becomes the *real* control tokens: the row can end its completion early or forge a turn the dataset
never had, and the model is trained on that structure. Every field of every row is checked against the
tokenizer's special tokens (its BOS/EOS/PAD/UNK and every added token marked special), before training: an
error that names the dataset, the row, the field and the token, or, with ``on_bad_row=skip``, a counted drop.
With ``escape=True`` the text is kept and each special token in it is broken by a zero-width space after its
first character: it reads the same and is tokenized as plain text.
"""

from __future__ import annotations

from datasets import Dataset

from dpo_recipes.data.registry import PreparedSplit, RecipeError

REASON = "text holds a special token of the tokenizer"
ZERO_WIDTH_SPACE = "\u200b"


def escape_text(text: str, strings: list[str]) -> str:
    """``text`` with every special token broken so that no tokenizer matches it (longest tokens first)."""
    for token in strings:
        text = text.replace(token, token[0] + ZERO_WIDTH_SPACE + token[1:])
    return text


def escape_row(row: dict, strings: list[str]) -> dict:
    """The row's prompt/chosen/rejected texts (either format) with special tokens escaped."""
    escaped = dict(row)
    for column in ("prompt", "chosen", "rejected"):
        value = row.get(column)
        if isinstance(value, str):
            escaped[column] = escape_text(value, strings)
        elif isinstance(value, list):
            escaped[column] = [{**turn, "content": escape_text(turn.get("content") or "", strings)} for turn in value]
    return escaped


def special_strings(tokenizer) -> list[str]:
    """The text forms of the tokenizer's special tokens, longest first."""
    added = [token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values() if token.special]
    return sorted({token for token in [*tokenizer.all_special_tokens, *added] if token}, key=len, reverse=True)


def _texts(row: dict):
    """(field, text) for each text of a TRL preference row, in either format."""
    for column in ("prompt", "chosen", "rejected"):
        value = row.get(column)
        if isinstance(value, str):
            yield column, value
        elif isinstance(value, list):
            for turn, message in enumerate(value):
                yield f"{column}[{turn}].content", message.get("content") or ""


def injected_token(row: dict, strings: list[str]) -> tuple[str, str] | None:
    """The first (field, special token) found in the row's text, or None."""
    for field, text in _texts(row):
        for token in strings:
            if token in text:
                return field, token
    return None


def guard(
    split: PreparedSplit, tokenizer, label: str, on_bad_row: str = "error", escape: bool = False
) -> PreparedSplit:
    """Raise on the first row whose text holds a special token, or (skip) drop and count every such row, or
    (escape) keep every row with its special tokens escaped, said in the split's account."""
    strings = special_strings(tokenizer)
    if not strings or not isinstance(split.dataset, Dataset):
        return split
    found = [(index, hit) for index, row in enumerate(split.dataset) if (hit := injected_token(row, strings))]
    if not found:
        return split
    index, (field, token) = found[0]
    if escape:
        split.dataset = split.dataset.map(lambda row: escape_row(row, strings), desc="Escaping special tokens")
        split.note = "; ".join(filter(None, [split.note, f"special tokens escaped in {len(found)} pairs"]))
        return split
    if on_bad_row == "error":
        raise RecipeError(
            f"dataset {label!r}, pair {index} (after the recipe): field {field!r} holds the tokenizer's special token "
            f"{token!r}, which would be tokenized as a real control token (a forged turn or an early end); "
            f"{len(found)} pair(s) do; fix the data, use on_bad_row=skip to drop them, or escape_special_tokens to "
            "keep them as plain text"
        )
    bad = {index for index, _ in found}
    split.dataset = split.dataset.filter(lambda _, i: i not in bad, with_indices=True, desc=f"Dropping {REASON}")
    split.dropped[REASON] += len(bad)
    return split
