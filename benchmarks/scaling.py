"""Item 6: training time against the number of pairs (should be linear) and against sequence length."""

from __future__ import annotations

import time

import common
from datasets import Dataset
from trl import ModelConfig

from dpo_recipes.trainer.build import build_dpo_trainer

FILLER = " Tell me about the red fox and the golden river and the black forest."


def _train_seconds(path: str, data, batch: int, max_length: int) -> float:
    args = common.cpu_config(
        "/tmp/dpo-bench-scaling",
        per_device_train_batch_size=batch,
        num_train_epochs=1,
        max_length=max_length,
    )
    trainer = build_dpo_trainer(ModelConfig(model_name_or_path=path, dtype="float32"), args, data)
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def longer(data, repeats: int):
    """The same pairs with ``repeats`` filler sentences added to each prompt (longer sequences)."""
    rows = data.to_list()
    for row in rows:
        row["prompt"] = [{"role": "user", "content": row["prompt"][-1]["content"] + FILLER * repeats}]
    return Dataset.from_list(rows)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b·x; (a, b, R²)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    residual = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    total = sum((y - my) ** 2 for y in ys)
    return a, b, 1 - residual / total if total else 1.0


def run(size: str, batch: int, pair_counts: list[int], repeats: list[int]) -> dict:
    path, tok = common.model_path(size), common.tokenizer()
    _train_seconds(path, common.pairs(batch), batch, 1024)  # warm-up (allocator, kernels)
    by_pairs = {n: _train_seconds(path, common.pairs(n), batch, 1024) for n in pair_counts}
    intercept, per_pair, r2 = linear_fit(list(by_pairs), list(by_pairs.values()))
    by_length = {}
    base = common.pairs(batch * 2)
    for k in repeats:
        data = longer(base, k)
        by_length[round(common.real_tokens_per_pair(data, tok) / 2)] = _train_seconds(path, data, batch, 1024) / 2
    return {
        "size": size,
        "batch": batch,
        "seconds_by_pairs": by_pairs,
        "fit": {"intercept_s": intercept, "s_per_pair": per_pair, "r2": r2},
        "seconds_per_step_by_tokens_per_sequence": by_length,
    }
