"""Shared fixtures. Everything runs offline: the embedded default is built locally (and cached)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = str(REPO / "recipes" / "zephyr_style" / "tiny.yaml")
# A short run of the tiny preset: a few steps on a few rows, no evaluation or checkpoint during training, a small
# win rate. The tests' runs start from it (``run_flags``).
QUICK_RUN = {
    "max_steps": 4,
    "max_train_samples": 64,
    "max_eval_samples": 16,
    "eval_strategy": "no",
    "save_strategy": "no",
    "win_rate_prompts": 4,
    "max_new_tokens": 12,
}


def run_flags(base: dict | None = None, **changes) -> list[str]:
    """Command-line flags of ``base`` (default QUICK_RUN) with ``changes``; a value of None leaves its flag out.

    >>> run_flags({"max_steps": 4, "judge": ""}, judge=None, logging_steps=1)
    ['--max_steps', '4', '--logging_steps', '1']
    """
    flags = {**(QUICK_RUN if base is None else base), **changes}
    return [item for name, value in flags.items() if value is not None for item in (f"--{name}", str(value))]


def load_recipe_module(name: str):
    """Import ``recipes/<name>.py`` (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(f"recipes_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_sft_path() -> str:
    """The embedded SFT model (built once, then read from the cache)."""
    from dpo_recipes.worlds import embedded

    return embedded.resolve(embedded.TINY_SFT)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_sft_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_sft_path)


@pytest.fixture(scope="module")
def uncached_pairs(tiny_sft_path):
    """96 held-out toy-world pairs whose prompts end in a word of this module's own, so their tokens (the key of
    the reference log-prob cache) are new and no earlier test session's datasets cache can answer."""
    import uuid

    from dpo_recipes.data import load_preference_splits
    from dpo_recipes.worlds import embedded

    data = load_preference_splits(embedded.WORLD, "ultrafeedback_binarized", {"t": "test_prefs"})["t"].dataset
    word = uuid.uuid4().hex

    def mark(row: dict) -> dict:
        return {"prompt": [{"role": "user", "content": f"{row['prompt'][-1]['content']} {word}"}]}

    return data.select(range(96)).map(mark)


def tiny_lora(**changes):
    """The embedded model with a small LoRA (r 4 on q and v): the policy the speed and reference tests train."""
    from trl import ModelConfig

    from dpo_recipes.worlds import embedded

    settings = dict(model_name_or_path=embedded.TINY_SFT, dtype="float32", use_peft=True, lora_r=4)
    return ModelConfig(**{**settings, "lora_target_modules": ["q_proj", "v_proj"], **changes})


def tiny_trainer(tmp_path, pairs, model_args=None, eval_pairs=None, reference_logps=None, **settings):
    """A DPOTrainer on CPU over ``pairs`` (default policy: `tiny_lora`): batches of 4, 3 steps at 5e-3, logs every
    step, max_length 96; ``settings`` override DPOConfig fields."""
    from trl import DPOConfig

    from dpo_recipes.trainer.build import build_dpo_trainer

    args = DPOConfig(
        output_dir=str(tmp_path / "run"),
        **{
            "per_device_train_batch_size": 4,
            "max_steps": 3,
            "learning_rate": 5e-3,
            "bf16": False,
            "use_cpu": True,
            "report_to": "none",
            "save_strategy": "no",
            "logging_steps": 1,
            "seed": 0,
            "max_length": 96,
            **settings,
        },
    )
    return build_dpo_trainer(model_args or tiny_lora(), args, pairs, eval_pairs, reference_logps=reference_logps)


# Two trainings that differ only in how they sum (sharded or not, packed or padded) compute gradients equal up to
# float32 rounding of the sums over a batch: about 1e-6 of a gradient's size on the tiny model (the cross-check's
# float32 gradient agreement). With an optimizer whose update is linear in the gradients (AdamW with
# `LINEAR_ADAMW`), each tensor's update must then agree within UPDATE_SHARE of that tensor's largest update: 100×
# the rounding, while a lost or double-counted gradient contribution moves an update by a large part of itself.
# (With AdamW's usual eps = 1e-8 each element is divided by √v̂: wherever a gradient nearly cancels, rounding is
# amplified up to 1/|g|, and runs that differ only in rounding move some weights differently by up to lr a step.)
UPDATE_SHARE = 1e-4
LINEAR_ADAMW = {"lr": 0.1, "eps": 1.0, "weight_decay": 0.01}


def assert_same_updates(start: dict, left: dict, right: dict) -> None:
    """Each tensor of ``right`` moved from ``start`` as ``left`` did, within UPDATE_SHARE of its largest move."""
    import torch

    assert left.keys() == right.keys() == start.keys() and left
    moved = False
    for name in left:
        update = left[name] - start[name]
        scale = float(update.abs().max())
        moved |= scale > 0
        torch.testing.assert_close(right[name] - start[name], update, rtol=0, atol=UPDATE_SHARE * scale, msg=name)
    assert moved  # a comparison of runs that trained nothing proves nothing
