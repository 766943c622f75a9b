"""Log-probabilities from scratch: a plain forward → log_softmax (float64) → the next token's log-prob.

A batch is TRL's preference layout: ``input_ids`` (2B, T) with the B chosen sequences first, then the B
rejected ones, right-padded, and ``completion_mask`` marking completion tokens (prompt and padding are 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TokenLogps:
    """Per-token views of one forward pass, aligned with the *predicted* tokens (positions 1..T-1)."""

    logps: Tensor  # (2B, T-1) float64: log π(token_t | tokens_<t)
    mask: Tensor  # (2B, T-1) float64: 1 where token_t is a completion token
    log_sum_sq_probs: Tensor  # (2B, T-1) float64: log Σ_v π(v | tokens_<t)², for WPO

    def sequence(self) -> Tensor:
        """log π(y|x): summed over completion tokens (the DPO paper's sequence log-probability)."""
        return (self.logps * self.mask).sum(dim=1)

    def lengths(self) -> Tensor:
        return self.mask.sum(dim=1)

    def halves(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """(chosen, rejected) halves of a (2B, …) tensor."""
        return values.chunk(2, dim=0)


def token_logps(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor) -> TokenLogps:
    """One plain forward of ``model`` (no TRL code path): logits upcast to float64 before the log-softmax."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    targets = input_ids[:, 1:]
    return TokenLogps(
        logps=log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1),
        mask=completion_mask[:, 1:].double(),
        log_sum_sq_probs=torch.logsumexp(2 * log_probs, dim=-1),
    )


def ld_sequence(tokens: TokenLogps, alpha: float) -> Tensor:
    """LD-DPO (Liu et al. 2024, Eq. 9): the first min(|y_w|, |y_l|) completion tokens of a pair count fully,
    the longer completion's excess tokens are weighted by α, removing DPO's length sensitivity."""
    lengths = tokens.lengths()
    shared = torch.minimum(*tokens.halves(lengths)).repeat(2)
    position = torch.cumsum(tokens.mask, dim=1)  # 1-based index among completion tokens
    weight = torch.where(position <= shared.unsqueeze(1), 1.0, alpha) * tokens.mask
    return (tokens.logps * weight).sum(dim=1)


def wpo_weights(tokens: TokenLogps) -> Tensor:
    """WPO (Zhou et al. 2024, Eq. 2 with its aligned weighting): per sequence,
    exp(mean over completion tokens of log[π(y_t) / Σ_v π(v)²]), computed without gradient."""
    with torch.no_grad():
        aligned = (tokens.logps - tokens.log_sum_sq_probs) * tokens.mask
        return torch.exp(aligned.sum(dim=1) / tokens.lengths().clamp(min=1))
