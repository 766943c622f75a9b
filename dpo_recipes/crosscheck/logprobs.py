"""Sequence log-probabilities of the DPO variants that do not simply sum token log-probs (LD-DPO, WPO), on
the per-token views of `dpo_recipes.core.scoring.token_logps`."""

from __future__ import annotations

import torch
from torch import Tensor

from dpo_recipes.core.scoring import TokenLogps


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
    exp(mean over completion tokens of log[π(y_t) / Σ_v π(v)²]), computed without gradient. A pair's weight is the
    product of its two sequences' weights, clamped at 1 in the WPO authors' code (`pair_weights`)."""
    with torch.no_grad():
        aligned = (tokens.logps - tokens.log_sum_sq_probs) * tokens.mask
        return torch.exp(aligned.sum(dim=1) / tokens.lengths().clamp(min=1))


def pair_weights(tokens: TokenLogps, clamped: bool = True) -> Tensor:
    """WPO's weight of each pair: w(y_w)·w(y_l), at most 1 as the WPO authors clamp it (``clamped``); TRL 1.16
    leaves it unclamped."""
    chosen, rejected = tokens.halves(wpo_weights(tokens))
    product = chosen * rejected
    return product.clamp(max=1.0) if clamped else product
