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
