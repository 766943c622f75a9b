"""``chat_template``: a chat template for a tokenizer that has none (a base model), or one that replaces its own.

The value is a Jinja file or a known name (`KNOWN`). It is set on the tokenizer before the preflight checks, so
they judge the template the run will use, and the trainer is given that tokenizer, so training, evaluation and
the saved run all use it (the alignment-handbook and axolotl offer the same setting).
"""

from __future__ import annotations

from pathlib import Path

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.worlds.tiny_lm import ZEPHYR_CHAT_TEMPLATE

# ChatML (Qwen, SmolLM2, OpenHermes): <|im_start|>role\ncontent<|im_end|>\n, the answer opened for generation
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
KNOWN = {"chatml": CHATML_CHAT_TEMPLATE, "zephyr": ZEPHYR_CHAT_TEMPLATE}


def resolve_chat_template(value: str) -> str:
    """The template text of a known name or a Jinja file."""
    if value in KNOWN:
        return KNOWN[value]
    path = Path(value).expanduser()
    if path.is_file():
        text = path.read_text()
        if "{%" not in text and "{{" not in text:
            raise ConfigError(f"chat_template {value!r}: the file holds no Jinja template ({{% … %}} or {{{{ … }}}})")
        return text
    raise ConfigError(f"chat_template {value!r}: not a file, and not a known name ({', '.join(KNOWN)})")


def apply_chat_template_setting(tokenizer, value: str | None):
    """``tokenizer`` with the chat template ``value`` names set (unchanged when ``value`` is None)."""
    if value:
        tokenizer.chat_template = resolve_chat_template(value)
    return tokenizer
