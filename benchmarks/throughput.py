"""Items 1-3: DPO step throughput of the lecture's loop, plain TRL and this recipe; the reference log-prob
cache; padding with and without length grouping. One model, one data set, one effective batch for all.

A repetition is one epoch over a small pool of pairs, so every batch counts once: grouped batches differ in
length by design, and a median of single steps would flatter grouping. The first epoch is a warm-up; the
figure is the median epoch time over the rest, divided by the steps of an epoch.
"""

from __future__ import annotations

import statistics
import time

import common
import from_scratch
import torch
from datasets import Dataset
from scaling import FILLER
from transformers import AutoModelForCausalLM
from trl import DPOTrainer, ModelConfig

from dpo_recipes.trainer.build import build_dpo_trainer
from dpo_recipes.trainer.packing import pair_tokens

# Each variant is a DPOConfig delta; "trl" is plain DPOTrainer, the others go through dpo_recipes.trainer.build.
VARIANTS = {
    "trl": {},
    "recipe, speed options off": {},
    "recipe, cached reference": {"precompute_ref_log_probs": True},
    "recipe, length grouping": {"train_sampling_strategy": "group_by_length"},
    "recipe, speed options on": {"precompute_ref_log_probs": True, "train_sampling_strategy": "group_by_length"},
    "recipe, packed": {"pack_sequences": True},
    "recipe, packed + cached reference": {"pack_sequences": True, "precompute_ref_log_probs": True},
    # batches of the same mean real tokens as `batch` pairs, filled by tokens (the budget is set in `build`)
    "recipe, packed, token budget": {"pack_sequences": True, "token_budget": True},
}


def build(variant: str, path: str, data, output_dir: str, batch: int, epochs: int, max_length: int, beta=0.1):
    """(trainer, its step clock, seconds to build it) for one variant. A token budget is ``batch`` times the
    mean real tokens of a pair, so its batches hold as many tokens as ``batch`` pairs on average."""
    clock = common.StepClock()
    settings = dict(VARIANTS[variant])
    pack = settings.pop("pack_sequences", False)
    budget = None
    if settings.pop("token_budget", False):
        budget = round(batch * common.real_tokens_per_pair(data, common.tokenizer()))
    args = common.cpu_config(
        output_dir,
        per_device_train_batch_size=batch,
        num_train_epochs=epochs,
        max_length=max_length,
        seed=0,
        beta=beta,
        **settings,
    )
    started = time.perf_counter()
    if variant == "trl":
        trainer = DPOTrainer(model=path, args=args, train_dataset=data, callbacks=[clock])
    else:
        trainer = build_dpo_trainer(
            ModelConfig(model_name_or_path=path, dtype="float32"),
            args,
            data,
            pack_sequences=pack,
            max_tokens_per_batch=budget,
            callbacks=[clock],
        )
    return trainer, clock, time.perf_counter() - started


def seconds_per_step(variant: str, path: str, data, output_dir: str, batch: int, epochs: int, max_length: int):
    """Median epoch time after a warm-up epoch, per step, for one variant (and the build time)."""
    trainer, clock, setup = build(variant, path, data, output_dir, batch, epochs, max_length)
    trainer.train()
    steps = len(data) // batch
    return common.median_blocks(clock.stamps, steps, steps)[0] / steps, setup


def padding_share(trainer) -> float:
    """Share of padding among all token positions of one epoch of the trainer's own batches."""
    pad = total = 0
    for batch in trainer.get_train_dataloader():
        pad += int((batch["attention_mask"] == 0).sum())
        total += batch["attention_mask"].numel()
    return pad / total


def padding_shares(path: str, data, batch: int, max_length: int, output_dir: str) -> dict:
    """Item 3: padding among all token positions of an epoch, random vs grouped batches."""
    return {
        variant: padding_share(build(variant, path, data, output_dir, batch, 1, max_length)[0])
        for variant in ("recipe, speed options off", "recipe, length grouping")
    }


def varied_lengths(data, seed: int = 0):
    """The same pairs with a long-tailed number of filler sentences added to each prompt (0 to 15, mostly few),
    so sequences run from ~25 to ~250 tokens, like real preference data, rather than the toy world's ~25."""
    generator = torch.Generator().manual_seed(seed)
    repeats = (torch.rand(len(data), generator=generator) ** 3 * 16).long().tolist()
    rows = data.to_list()
    for row, k in zip(rows, repeats, strict=True):
        row["prompt"] = [{"role": "user", "content": row["prompt"][-1]["content"] + FILLER * k}]
    return Dataset.from_list(rows)


def lecture_seconds_per_step(path: str, data, tok, batch: int, epochs: int, max_length: int) -> float:
    rows = [
        {
            "prompt": tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False),
            "chosen": r["chosen"][0]["content"] + tok.eos_token,
            "rejected": r["rejected"][0]["content"] + tok.eos_token,
        }
        for r in data
    ]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    steps = len(data) // batch
    stamps = from_scratch.step_times(model, rows, tok, batch, max_length, steps * epochs)
    return common.median_blocks(stamps, steps, steps)[0] / steps


TOY_VARIANTS = ("trl", "recipe, speed options off", "recipe, speed options on")


def run(size: str, batch: int, epochs: int, pool: int, max_length: int, output_dir: str) -> dict:
    """The toy world's lengths: the lecture's loop, plain TRL, the recipe off and on; the cache build times.

    The pool is small (epochs are repetitions), smaller than the 4 batches transformers' LengthGroupedSampler
    needs to group at all, so here "speed options on" gains from the cached reference only; grouping is
    measured on the long-tailed pool (``run_varied``) and by its padding share over 512 pairs."""
    path, tok = common.model_path(size), common.tokenizer()
    data = common.pairs(pool)
    seconds = {"lecture loop (a)": lecture_seconds_per_step(path, data, tok, batch, epochs, max_length)}
    for variant in TOY_VARIANTS:
        seconds[variant] = seconds_per_step(variant, path, data, output_dir, batch, epochs, max_length)[0]
    fresh = data.map(lambda row: row, new_fingerprint=f"bench-{time.time_ns()}")  # nothing cached for it yet
    builds = [
        build("recipe, cached reference", path, fresh, output_dir, batch, 1, max_length, beta)[2] for beta in (0.1, 0.5)
    ]  # the second run of a β sweep reads the first's reference log-probs
    shares = padding_shares(path, common.pairs(512), batch, max_length, output_dir)
    tokens_per_pair = common.real_tokens_per_pair(data, tok)
    table = {
        name: {"s/step": s, "pairs/s": batch / s, "tokens/s": batch * tokens_per_pair / s}
        for name, s in seconds.items()
    }
    extra = {
        "reference precompute, first build (s)": builds[0],
        "reference precompute, cached build (s)": builds[1],
        "padding share, random batches": shares["recipe, speed options off"],
        "padding share, grouped batches": shares["recipe, length grouping"],
    }
    return {
        "size": size,
        "batch": batch,
        "pool": pool,
        "epochs": epochs,
        "max_length": max_length,
        "tokens_per_pair": tokens_per_pair,
        "variants": table,
        "extra": extra,
    }


def spread(values: list[float]) -> float:
    """Coefficient of variation: standard deviation over mean."""
    return statistics.pstdev(values) / statistics.mean(values)


def run_varied(size: str, batch: int, pool: int, output_dir: str) -> dict:
    """Every variant for one whole epoch of long-tailed lengths (max_length 512): a pool big enough for the
    sampler to group (transformers groups within 4-50 batches), one epoch per variant (each batch once).
    Every variant trains on the same pairs, so real tokens/s is the epoch's real tokens over its time; the
    spread of step times (after the first step) is what token-budget batches make predictable."""
    path, tok = common.model_path(size), common.tokenizer()
    data = varied_lengths(common.pairs(pool))
    seconds, tokens_per_second, step_spread, steps = {}, {}, {}, {}
    for variant in VARIANTS:
        trainer, clock, _ = build(variant, path, data, output_dir, batch, 1, 512)
        trainer.train()
        durations = [b - a for a, b in zip(clock.stamps, clock.stamps[1:], strict=False)]
        seconds[variant] = sum(durations) / len(durations)
        tokens_per_second[variant] = sum(pair_tokens(trainer.train_dataset)) / sum(durations)
        step_spread[variant] = spread(durations[1:])
        steps[variant] = len(durations)
    shares = padding_shares(path, data, batch, 512, output_dir)
    return {
        "tokens_per_pair": common.real_tokens_per_pair(data, tok),
        "pairs": len(data),
        "batch": batch,
        "s/step": seconds,
        "real tokens/s": tokens_per_second,
        "step time spread": step_spread,
        "steps": steps,
        "padding share, random batches": shares["recipe, speed options off"],
        "padding share, grouped batches": shares["recipe, length grouping"],
    }
