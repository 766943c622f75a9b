"""Chat message lists (``[{"role": ..., "content": ...}, ...]``): checks, and the two TRL output formats.

Recipes build the *conversational* form. `preference_row` turns it into the *standard* form when asked:
a single user turn becomes plain strings, and anything longer (a system prompt, a multi-turn history)
becomes a role-labelled transcript in the Anthropic HH style the DPO paper used, so no turn is lost.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import unicodedata

from dpo_recipes.data.registry import BadRow

ROLES = ("system", "user", "assistant")
TRANSCRIPT_LABELS = {"system": "System", "user": "Human", "assistant": "Assistant"}


def message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


# C0 and C1 control characters other than tab, newline and carriage return, and the bidirectional overrides and
# embeddings: in chat text they are corruption (a NUL from a bad export, terminal escapes such as U+001B or its
# C1 form U+009B) or a way to make text read differently from what it holds (U+202E, "Trojan source"), and
# tokenizers turn them into tokens no one meant. Bidi *marks* (U+200E/U+200F) and isolates, used by real
# right-to-left text, are kept.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e]")
# Characters that show nothing: format characters (zero-width space, joiners, BOM …) and the blank fillers.
_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def common_prefix(first: str, second: str) -> str:
    """The longest shared beginning of two strings (``os.path.commonprefix``'s answer), by bisection on slices:
    a dozen C-level comparisons, where commonprefix compares character by character in Python (it was two
    thirds of a large HH file's conversion time).

    >>> common_prefix("Human: hi. Assistant: yes", "Human: hi. Assistant: no")
    'Human: hi. Assistant: '
    """
    low, high = 0, min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return first[:low]


def control_character(value: str) -> str | None:
    """Where ``value`` holds a control character: "U+001B at position 7", or None."""
    found = _CONTROL.search(value)
    return f"U+{ord(found.group()):04X} at position {found.start()}" if found else None


def clean_text(value: str, field: str) -> str:
    """``value`` unless it holds a control character (BadRow with its code point and position)."""
    found = control_character(value)
    if found:
        raise BadRow(field, f"contains control character {found}")
    return value


@functools.cache
def _shown() -> re.Pattern:
    """A character that shows: not whitespace (``\\s`` is ``str.isspace``), not a format character (Unicode
    category Cf, gathered once from this Python's Unicode tables), not a blank filler."""
    formats = "".join(chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Cf")
    return re.compile(f"[^\\s{re.escape(formats + ''.join(sorted(_INVISIBLE)))}]")


def visible(value: str) -> bool:
    """Whether a reader sees anything of ``value`` (one compiled search that stops at the first character that
    shows: a per-character Python loop over every row's text was most of a large dataset's conversion time)."""
    return _shown().search(value) is not None


def number(value: object, field: str) -> float:
    """A finite number (a score), else a BadRow: NaN and ±Infinity order nothing, and NaN is not even equal to
    itself, so a NaN "tie" would pass as a preference. A numeric string counts (CSV files are read as text)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise BadRow(field, f"expected a number, got the text {value!r:.40}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRow(field, f"expected a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value):
        raise BadRow(field, f"is {value!r}, not a finite number")
    return float(value)


def text(value: object, field: str, allow_empty: bool = False) -> str:
    """``value`` if it is a string (non-blank unless ``allow_empty``), else a BadRow naming ``field``."""
    if value is None:
        raise BadRow(field, "is missing (null)")
    if not isinstance(value, str):
        raise BadRow(field, f"expected text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise BadRow(field, "is empty or whitespace-only")
    if not allow_empty and not visible(value):
        raise BadRow(field, "shows nothing (only invisible or blank characters)")
    return clean_text(value, field)


def check_messages(messages: object, field: str) -> list[dict]:
    """Return ``messages`` if it is a non-empty list of {role, content} turns with known roles and text."""
    if not isinstance(messages, list) or not messages:
        raise BadRow(field, f"expected a non-empty list of messages, got {type(messages).__name__}")
    for turn, item in enumerate(messages):
        if not isinstance(item, dict) or not {"role", "content"} <= item.keys():
            raise BadRow(field, f"turn {turn} is not a {{'role', 'content'}} message", f"{item!r:.80}")
        if item["role"] not in ROLES:
            raise BadRow(field, f"turn {turn} has unknown role {item['role']!r}; expected one of {ROLES}")
        if not isinstance(item["content"], str):
            raise BadRow(field, f"turn {turn} content is {type(item['content']).__name__}, not text")
        clean_text(item["content"], f"{field}[{turn}].content")
    return messages


def split_final_assistant_turn(messages: object, field: str) -> tuple[list[dict], dict]:
    """Split a conversation into its history (the prompt) and its final assistant turn (the completion)."""
    messages = check_messages(messages, field)
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise BadRow(field, "expected a conversation ending on an assistant turn after at least one prompt turn")
    if not messages[-1]["content"].strip():
        raise BadRow(field, "the final assistant turn is empty")
    if not visible(messages[-1]["content"]):
        raise BadRow(field, "the final assistant turn shows nothing (only invisible or blank characters)")
    return [message(m["role"], m["content"]) for m in messages[:-1]], message("assistant", messages[-1]["content"])


def to_transcript(messages: list[dict], generation_prompt: bool = False) -> str:
    """HH-style text: ``"\\n\\nHuman: hi\\n\\nAssistant: hello"`` (+ ``"\\n\\nAssistant:"`` to prompt a reply)."""
    turns = "".join(f"\n\n{TRANSCRIPT_LABELS[m['role']]}: {m['content']}" for m in messages)
    return turns + ("\n\nAssistant:" if generation_prompt else "")


def preference_row(prompt: list[dict], chosen: str, rejected: str, fmt: str, **metadata) -> dict:
    """A TRL preference row in ``fmt`` (see `registry.FORMATS`) from a prompt and two replies.

    >>> preference_row([message("user", "Hi")], "Hello!", "Go away.", "standard")
    {'prompt': 'Hi', 'chosen': 'Hello!', 'rejected': 'Go away.'}
    >>> preference_row([message("system", "Be kind."), message("user", "Hi")], "Hello!", "No.", "standard")["prompt"]
    '\\n\\nSystem: Be kind.\\n\\nHuman: Hi\\n\\nAssistant:'
    >>> preference_row([message("user", "Hi")], "Hello!", "Go away.", "transcript")
    {'prompt': '\\n\\nHuman: Hi\\n\\nAssistant:', 'chosen': ' Hello!', 'rejected': ' Go away.'}
    """
    if fmt == "conversational":
        row = {"prompt": prompt, "chosen": [message("assistant", chosen)], "rejected": [message("assistant", rejected)]}
    elif fmt == "standard" and len(prompt) == 1 and prompt[0]["role"] == "user":
        row = {"prompt": prompt[0]["content"], "chosen": chosen, "rejected": rejected}
    else:
        row = {
            "prompt": to_transcript(prompt, generation_prompt=True),
            "chosen": f" {chosen}",
            "rejected": f" {rejected}",
        }
    return {**row, **metadata}


def with_system(system: object, prompt: list[dict], field: str = "system") -> list[dict]:
    """Prepend a system turn when the dataset has a non-empty system prompt for the row."""
    if system is None or (isinstance(system, str) and not system.strip()):
        return prompt
    return [message("system", text(system, field)), *prompt]
