"""This project's options of a run, beside TRL's ``DPOConfig`` and ``ModelConfig`` in one ``TrlParser``: small
dataclasses by concern, joined in ``RecipeArguments`` (one object, so every flag and YAML key is as before)."""

import logging
from dataclasses import dataclass, field

import torch
from trl import ScriptArguments

from dpo_recipes.training.retired_options import given_keys

logger = logging.getLogger(__name__)


@dataclass
class DataArguments(ScriptArguments):
    """Which raw data, read through which recipe into TRL's format."""

    dataset_name: str = field(
        default="HuggingFaceH4/ultrafeedback_binarized",
        metadata={"help": "Hub id, local path, or an embedded name such as 'dpo-recipes/toy-world'."},
    )
    dataset_train_split: str = field(default="train_prefs", metadata={"help": "Raw split to train on."})
    dataset_test_split: str = field(default="test_prefs", metadata={"help": "Raw held-out split to evaluate on."})
    dataset_recipe: str = field(
        default="ultrafeedback_binarized",
        metadata={"help": "Registered dataset recipe that turns raw rows into TRL's prompt/chosen/rejected."},
    )
    dataset_recipe_options: dict | str | None = field(
        default=None,
        metadata={"help": 'Options of the recipe, a YAML mapping or JSON string, e.g. \'{"rejected": "worst"}\'.'},
    )
    dataset_format: str = field(
        default="conversational",
        metadata={
            "help": "TRL format the recipe emits: 'conversational' (message lists, the default), 'standard' (strings; "
            "a lone user turn stays a bare string, longer prompts become an HH-style transcript) or 'transcript' "
            "(strings, every prompt a transcript: one prompt format for data that mixes single and multi-turn rows)."
        },
    )
    dataset_data_dir: str | None = field(default=None, metadata={"help": "data_dir of the dataset (HH subsets)."})
    dataset_mixture: list[dict] | None = field(
        default=None,
        metadata={
            "help": "YAML list of {dataset, recipe, fraction, train_split, test_split, options}; replaces "
            "dataset_name (see dpo_recipes.data.mixing)."
        },
    )
    on_bad_row: str = field(
        default="error",
        metadata={"help": "'error': stop at a malformed row, naming it; 'skip': drop it and count it in the report."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Read only the first N raw train rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Read only the first N raw test rows."})
    escape_special_tokens: bool = field(
        default=False,
        metadata={
            "help": "Keep pairs whose text holds the tokenizer's special tokens (e.g. '<|im_end|>'), with "
            "each token broken by a zero-width space so it is tokenized as plain text. Off: such a pair is an "
            "error (or, with on_bad_row skip, a counted drop): it would forge a turn or end an answer early."
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template for a tokenizer that has none (a base model), or to replace its own: a Jinja "
            "file or a known name (chatml, zephyr). Set before the preflight checks; training, evaluation and the "
            "saved tokenizer use it."
        },
    )
    allow_eval_on_train: bool = field(
        default=False,
        metadata={
            "help": "Allow a test split that reads the same rows as training (one data file, or the same "
            "split name twice); its figures are then labelled 'not held out'. Off: such a run is refused."
        },
    )


@dataclass
class EvaluationArguments:
    """What the run measures after training, and the cross-check of its loss."""

    judge: str | None = field(
        default=None,
        metadata={"help": "Judge scoring policy vs reference answers for the win rate ('toy-world'); unset: skip."},
    )
    second_judge: str | None = field(
        default=None,
        metadata={
            "help": "A judge that did not make the pairs, for the quality section's second win rate (gaming "
            "shows as disagreement). Unset: textblob for a vader judge, vader for textblob, none otherwise; '' "
            "for none."
        },
    )
    win_rate_prompts: int = field(default=100, metadata={"help": "Held-out prompts answered by both models."})
    eval_pairs: int | None = field(
        default=None,
        metadata={
            "help": "Held-out pairs TRL's evaluate() scores before and after training (the first N of the "
            "test split; default: all). The win rate still takes its prompts from the whole test split."
        },
    )
    win_rate_temperatures: list[float] = field(
        default_factory=lambda: [0.0],
        metadata={
            "help": "Temperatures at which both models answer (0 = greedy); KL(π‖π_ref) is measured on the "
            "policy's samples at temperature 1."
        },
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Length limit of each answer in the win-rate eval."})
    crosscheck: bool = field(
        default=True,
        metadata={
            "help": "Verify TRL's loss for this run's loss settings against the from-scratch cross-check "
            "(a separate CPU process on the embedded model, seconds) and put the verdict in the model card."
        },
    )


@dataclass
class SpeedArguments:
    """How the run spends its compute: threads, packing, token-budget batches, a reference file."""

    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads of torch in each process; default: the cores this process may use divided "
            "by the processes on this machine (two processes × two threads on two cores stall each other)."
        },
    )
    pack_sequences: bool = field(
        default=False,
        metadata={
            "help": "Padding-free DPO: the chosen and rejected sequences of a batch go through the model as "
            "one row of real tokens, position ids restarting at each sequence (TRL 1.16 disables its own "
            "padding_free for DPO). Same loss and gradients as padded (the cross-check verifies it), no "
            "compute spent on padding."
        },
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Make training batches by real tokens instead of by pairs: pairs in a seeded random order "
            "fill a batch up to this many tokens (prompt + chosen + prompt + rejected; a pair is never split), "
            "so every step costs about the same. Replaces per_device_train_batch_size for training; meant "
            "with pack_sequences, which removes the padding such batches would carry."
        },
    )
    reference_logps: str | None = field(
        default=None,
        metadata={
            "help": "Read the reference log-probs from this file (written once by `dpo-recipes reference-logps` "
            "with the same recipe) instead of running the reference model: every rank and later run reads "
            "the same numbers. A file computed for other pairs, max_length, truncation, ld_alpha, precision, "
            "reference weights or TRL version is refused, naming what differs."
        },
    )


@dataclass
class RecipeArguments(SpeedArguments, EvaluationArguments, DataArguments):
    """Every option of a run that is not TRL's (see `dpo-recipes train --help`)."""


@dataclass
class ReferenceFileArguments:
    output_file: str = field(
        metadata={"help": "Where to write the reference log-probs (safetensors; the run's key and a checksum inside)."}
    )


def device_precision() -> dict[str, bool]:
    """bf16 on a GPU that computes in it, fp16 on one that does not (T4, V100: emulated bf16 is slow), float32
    on a CPU."""
    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def with_device_precision(argv: list[str]) -> list[str]:
    """``argv`` with the device's precision when neither bf16 nor fp16 is given (as a flag or a YAML key): TRL's
    own default, bf16, is refused on a T4 and autocasts a CPU run."""
    if given_keys(argv) & {"bf16", "fp16", "help"} or "-h" in argv:
        return argv
    chosen = device_precision()
    logger.info("Precision chosen for this device: %s", next((k for k, v in chosen.items() if v), "float32"))
    return [*argv, *(item for key, value in chosen.items() for item in (f"--{key}", str(value).lower()))]
