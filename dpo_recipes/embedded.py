"""The offline embedded default: names that resolve to locally built artifacts instead of hub ids.

    dpo-recipes/toy-world          the toy preference world, laid out like the hub's ultrafeedback_binarized
                                   repo (data/{split}-00000-of-00001.parquet), so `load_dataset(path)` reads it
    dpo-recipes/tiny-zephyr-base   the seeded tiny Mistral with its locally trained tokenizer
    dpo-recipes/tiny-zephyr-sft    the base after dSFT on the world's SFT split with TRL's SFTTrainer:
                                   the reference model of the tiny DPO preset

Each is built on first use, cached under $DPO_RECIPES_CACHE (default ~/.cache/dpo_recipes) in a directory
named by a hash of everything that determines it (its settings and the source of the modules that build it,
so a code change rebuilds), and moved into place only when complete. Any other name
is returned unchanged, so the same loading code serves hub ids and local paths.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from dpo_recipes.files import atomic_directory
from dpo_recipes.tiny_lm import build_tiny_model, train_tokenizer
from dpo_recipes.toy_world import ToyWorld, WorldConfig

logger = logging.getLogger(__name__)

WORLD = "dpo-recipes/toy-world"
TINY_BASE = "dpo-recipes/tiny-zephyr-base"
TINY_SFT = "dpo-recipes/tiny-zephyr-sft"

BASE_SETTINGS = dict(seed=0, vocab_size=512)
# The dSFT stage of the tiny preset (Zephyr: SFT before DPO; DPO without it is much worse).
SFT_SETTINGS = dict(num_train_epochs=3, learning_rate=3e-3, per_device_train_batch_size=32, seed=0)


def cache_dir() -> Path:
    return Path(os.environ.get("DPO_RECIPES_CACHE", Path.home() / ".cache" / "dpo_recipes"))


def is_embedded(name: str | None) -> bool:
    return name in _BUILDERS


def resolve(name: str) -> str:
    """The local path of an embedded artifact (built if missing), or ``name`` itself for anything else."""
    if not is_embedded(name):
        return name
    settings, build = _BUILDERS[name]
    sources = [inspect.getsource(sys.modules[m]) for m in (__name__, ToyWorld.__module__, build_tiny_model.__module__)]
    key = hashlib.sha256(json.dumps([name, settings, sources], sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"{name.split('/')[-1]}-{key}"
    if not path.is_dir():
        logger.info("Building %s into %s (first use; cached afterwards)", name, path)
        with atomic_directory(path) as scratch:
            build(scratch)
    return str(path)


def build_world(path: Path) -> None:
    from datasets import Dataset

    for split, rows in ToyWorld().splits().items():
        Dataset.from_list(rows).to_parquet(path / "data" / f"{split}-00000-of-00001.parquet")


def build_tiny_base(path: Path) -> None:
    tokenizer = train_tokenizer(ToyWorld().corpus(), vocab_size=BASE_SETTINGS["vocab_size"])
    build_tiny_model(tokenizer, seed=BASE_SETTINGS["seed"]).save_pretrained(path)
    tokenizer.save_pretrained(path)


def build_tiny_sft(path: Path) -> None:
    """dSFT: train the base on the world's unbiased demonstrations, loss on the completions only."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from dpo_recipes.data import messages_to_prompt_completion

    demos = load_dataset(resolve(WORLD), split="train_sft").map(
        messages_to_prompt_completion, remove_columns=["prompt", "chosen", "rejected", "messages"]
    )
    args = SFTConfig(
        output_dir=str(path / "sft-run"),
        lr_scheduler_type="cosine",
        warmup_steps=10,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=True,
        activation_checkpointing=False,
        max_length=128,
        **SFT_SETTINGS,
    )
    trainer = SFTTrainer(model=resolve(TINY_BASE), args=args, train_dataset=demos)
    trainer.train()
    trainer.save_model(str(path))
    (path / "sft_log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))


# name -> (everything that determines the artifact, hashed into its cache key; the builder)
_BUILDERS: dict[str, tuple[dict, Callable[[Path], None]]] = {
    WORLD: (asdict(WorldConfig()), build_world),
    TINY_BASE: (BASE_SETTINGS, build_tiny_base),
    TINY_SFT: ({"world": asdict(WorldConfig()), "base": BASE_SETTINGS, "sft": SFT_SETTINGS}, build_tiny_sft),
}
