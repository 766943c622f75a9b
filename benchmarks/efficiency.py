"""Item 5: achieved FLOP/s of the DPO step against the machine's measured matmul peak, in the same run.

Counted: a forward costs 2·N FLOPs per token and a backward 4·N (N = parameters, embeddings included, the
attention-score matmuls left out: they are <3% at these lengths). A full fine-tune DPO step on T tokens
(chosen and rejected rows, padding included: the hardware computes on it) is 6·N·T for the policy plus 2·N·T
for the reference forward. The real (non-padding) share is reported beside it.
"""

from __future__ import annotations

import time

import common
import torch
from trl import ModelConfig

from dpo_recipes.trainer.build import build_dpo_trainer


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a square matmul on this machine (the best of ``repeats``), fp32 unless ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


class TokenCounter(common.StepClock):
    """Step end times, and the tokens (padded and real) of every batch the policy sees."""

    def __init__(self):
        super().__init__()
        self.padded: list[int] = []
        self.real: list[int] = []


def run(size: str, batch: int, reps: int) -> dict:
    peak = matmul_peak()
    steps = 1 + reps
    clock = TokenCounter()
    args = common.cpu_config(
        "/tmp/dpo-bench-efficiency",
        per_device_train_batch_size=batch,
        max_steps=steps,
    )
    trainer = build_dpo_trainer(
        ModelConfig(model_name_or_path=common.model_path(size), dtype="float32"),
        args,
        common.pairs(batch * steps),
        callbacks=[clock],
    )
    for batch_ in trainer.get_train_dataloader():  # the same seeded batches the run will see
        clock.padded.append(batch_["attention_mask"].numel())
        clock.real.append(int(batch_["attention_mask"].sum()))
    trainer.train()
    seconds, _ = common.median_blocks(clock.stamps, 1, 1)
    params = common.parameters(size)
    tokens = sorted(clock.padded[1:])[len(clock.padded[1:]) // 2]
    flops = 8 * params * tokens
    real_share = sum(clock.real) / sum(clock.padded)
    return {
        "size": size,
        "parameters": params,
        "batch": batch,
        "tokens_per_step": tokens,
        "s/step": seconds,
        "flop/s": flops / seconds,
        "matmul_peak": peak,
        "share_of_peak": flops / seconds / peak,
        "real_token_share": real_share,
        "gpu": "not measured",
    }
