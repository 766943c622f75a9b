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


def load_recipe_module(name: str):
    """Import ``recipes/<name>.py`` (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(f"recipes_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_sft_path() -> str:
    """The embedded SFT model (built once, then read from the cache)."""
    from dpo_recipes import embedded

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

    from dpo_recipes import embedded
    from dpo_recipes.data import load_preference_splits

    data = load_preference_splits(embedded.WORLD, "ultrafeedback_binarized", {"t": "test_prefs"})["t"].dataset
    word = uuid.uuid4().hex

    def mark(row: dict) -> dict:
        return {"prompt": [{"role": "user", "content": f"{row['prompt'][-1]['content']} {word}"}]}

    return data.select(range(96)).map(mark)


def tiny_lora(**changes):
    """The embedded model with a small LoRA (r 4 on q and v): the policy the speed and reference tests train."""
    from trl import ModelConfig

    from dpo_recipes import embedded

    settings = dict(model_name_or_path=embedded.TINY_SFT, dtype="float32", use_peft=True, lora_r=4)
    return ModelConfig(**{**settings, "lora_target_modules": ["q_proj", "v_proj"], **changes})
