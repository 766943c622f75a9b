"""Checks that fail a run within seconds, before big weights load or training starts, with what to change.

Reads only the model's config and tokenizer (kilobytes), and the prepared data the run needs anyway.
"""

from __future__ import annotations

import logging

from transformers import AutoConfig, AutoTokenizer

from dpo_recipes import embedded
from dpo_recipes.errors import ConfigError, unavailable
from dpo_recipes.evaluation import judge_problem

logger = logging.getLogger(__name__)


def load_config_and_tokenizer(model_args, training_args):
    """The model's config and tokenizer, or a ConfigError saying why they cannot be read."""
    name = model_args.model_name_or_path
    kwargs = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code)
    try:
        path = embedded.resolve(name)
        return AutoConfig.from_pretrained(path, **kwargs), AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise ConfigError(unavailable("model", name, error)) from error


def model_problems(script_args, training_args, model_args, config, tokenizer) -> list[str]:
    """What would make this model fail on this data and these settings (empty when all is well)."""
    name, problems = model_args.model_name_or_path, []
    if tokenizer.pad_token is None and tokenizer.eos_token is None and training_args.pad_token is None:
        problems.append(f"the tokenizer of {name!r} has neither a pad nor an EOS token: set --pad_token")
    if script_args.dataset_format == "conversational" and not tokenizer.chat_template:
        problems.append(
            f"the data is conversational but the tokenizer of {name!r} has no chat template: use an SFT/instruct "
            "checkpoint, or --dataset_format standard"
        )
    context = getattr(config, "max_position_embeddings", None)
    if training_args.max_length and context and training_args.max_length > context:
        problems.append(f"max_length {training_args.max_length} exceeds the model's context of {context} tokens")
    if script_args.judge and judge_problem(script_args.judge):
        problems.append(judge_problem(script_args.judge))
    return problems


def check_run(script_args, training_args, model_args) -> None:
    """Model, tokenizer and settings: raise one ConfigError listing every problem found."""
    config, tokenizer = load_config_and_tokenizer(model_args, training_args)
    problems = model_problems(script_args, training_args, model_args, config, tokenizer)
    if problems:
        raise ConfigError("the run cannot start: " + "; ".join(problems))
    logger.info("Preflight: %s, its tokenizer and the settings are compatible", model_args.model_name_or_path)


def check_data(splits: dict) -> None:
    """Every split has pairs left after the recipe's drops (an empty train split would fail deep in TRL)."""
    for role, split in splits.items():
        if split.rows_kept == 0 and split.rows_read:  # a stream counts as it is read, so rows_read 0 passes
            raise ConfigError(f"no usable pairs in the {role} split: {split.describe(role)}")
