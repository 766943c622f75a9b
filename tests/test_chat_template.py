"""``chat_template``: a tokenizer without a template (a base model) trains on conversational data once one is set."""

import json
import shutil

import pytest
from transformers import AutoTokenizer

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.training.chat_templates import CHATML_CHAT_TEMPLATE, KNOWN, resolve_chat_template
from dpo_recipes.training.train import run_from_command_line
from dpo_recipes.worlds.tiny_lm import ZEPHYR_CHAT_TEMPLATE

from .conftest import TINY, run_flags


@pytest.fixture
def template_less_model(tmp_path, tiny_sft_path):
    """The tiny SFT model with its chat template taken away, as a base model ships."""
    copy = tmp_path / "no-template"
    shutil.copytree(tiny_sft_path, copy, ignore=shutil.ignore_patterns("sft-run"))
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert not AutoTokenizer.from_pretrained(copy).chat_template
    return copy


def test_a_template_less_tokenizer_trains_with_a_chat_template_setting(template_less_model, tmp_path):
    flags = run_flags(max_steps=2, judge="", crosscheck="false", win_rate_prompts=None, max_new_tokens=None)
    argv = ["--config", TINY, "--model_name_or_path", str(template_less_model), *flags]
    with pytest.raises(SystemExit, match="has no chat template"):
        run_from_command_line([*argv, "--output_dir", str(tmp_path / "refused")])

    metrics = run_from_command_line([*argv, "--output_dir", str(tmp_path / "run"), "--chat_template", "zephyr"])
    assert metrics["train"]["global_step"] == 2
    assert AutoTokenizer.from_pretrained(tmp_path / "run").chat_template == ZEPHYR_CHAT_TEMPLATE  # saved with it


def test_a_chat_template_is_a_known_name_or_a_jinja_file(tmp_path):
    assert resolve_chat_template("chatml") == CHATML_CHAT_TEMPLATE and set(KNOWN) == {"chatml", "zephyr"}
    own = tmp_path / "mine.jinja"
    own.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert resolve_chat_template(str(own)) == own.read_text()
    (tmp_path / "plain.txt").write_text("not a template")
    with pytest.raises(ConfigError, match="holds no Jinja template"):
        resolve_chat_template(str(tmp_path / "plain.txt"))
    with pytest.raises(ConfigError, match=r"not a file, and not a known name \(chatml, zephyr\)"):
        resolve_chat_template("llama9")
