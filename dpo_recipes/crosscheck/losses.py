"""DPO and its variants, written from their papers, independently of TRL (no TRL import in this package).

Notation, per preference pair (tensors of shape (B,)): ``c`` and ``r`` are the log-ratios
log π(y|x) − log π_ref(y|x) of the chosen and the rejected completion, ``h = c − r`` (or the difference of
f-divergence scores, see `f_scores`), and β the KL coefficient. Every function returns the per-pair loss;
the batch loss is its mean (`combine` weights several losses).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

logsigmoid = F.logsigmoid


def dpo_loss(pi_logps: Tensor, ref_logps: Tensor, yw_idxs: Tensor, yl_idxs: Tensor, beta: float):
    """The index API of the seed notes: log-probs of all completions, and index pairs (winner, loser).

    Returns ``(losses, rewards)`` with losses = −log σ(β[(log π_w − log π_l) − (log π_ref,w − log π_ref,l)])
    (DPO, Rafailov et al. 2023, Eq. 7) and rewards = β(log π − log π_ref), detached (Eq. 5's implicit reward).
    """
    pi_logratios = pi_logps[yw_idxs] - pi_logps[yl_idxs]
    ref_logratios = ref_logps[yw_idxs] - ref_logps[yl_idxs]
    losses = -logsigmoid(beta * (pi_logratios - ref_logratios))
    return losses, (beta * (pi_logps - ref_logps)).detach()


def f_scores(logratio: Tensor, divergence: str = "reverse_kl", alpha: float = 0.5) -> Tensor:
    """f'(u) at u = π/π_ref for the f-divergence regularizer of f-DPO (Wang et al. 2023, Table 1, Eq. 10).

    f' is defined up to an additive constant, which cancels in the pairwise difference of Eq. 10; it is fixed
    here so the score is 0 at π = π_ref. Reverse KL gives log u (plain DPO); forward KL 1 − 1/u;
    Jensen–Shannon log(2u / (1 + u)); α-divergence (1 − u^(−α)) / α, with the paper's α.
    """
    if divergence == "reverse_kl":
        return logratio
    if divergence == "forward_kl":
        return 1 - torch.exp(-logratio)
    if divergence == "js_divergence":
        return math.log(2) + logratio - torch.logaddexp(torch.zeros_like(logratio), logratio)
    if divergence == "alpha_divergence":
        return logratio if alpha == 0 else (1 - torch.exp(-alpha * logratio)) / alpha
    raise ValueError(f"unknown f-divergence {divergence!r}")


def sigmoid(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7): −log σ(βh); with label noise ε, conservative DPO (cDPO, Mitchell
    2023): −(1 − ε) log σ(βh) − ε log σ(−βh)."""
    return -(1 - label_smoothing) * logsigmoid(beta * h) - label_smoothing * logsigmoid(-beta * h)


def hinge(h: Tensor, beta: float) -> Tensor:
    """Hinge loss on the reference-normalized likelihood (RSO, Liu et al. 2023, Eq. 10; SLiC): max(0, 1 − βh)."""
    return torch.relu(1 - beta * h)


def ipo(h: Tensor, tau: float) -> Tensor:
    """IPO (Azar et al. 2023, Eq. 17): (h − 1/(2τ))², τ being TRL's β, h the sequence log-ratio difference."""
    return (h - 1 / (2 * tau)) ** 2


def exo_pair(h: Tensor, beta: float, log_target_chosen: float = 0.0, log_target_rejected: float = -10.0) -> Tensor:
    """EXO-pref (Ji et al. 2024, Eq. 16, K = 2): KL(p_θ ‖ p_target) with p_θ = (σ(βh), σ(−βh)). The target's log
    weights are those of the EXO authors' code (``exact_loss``, exo-pref): 0 for the chosen answer and log ε = −10
    for the rejected one, left unnormalized. (TRL takes ε from label_smoothing and uses (log(1 − ε), log ε).)"""
    p_chosen, p_rejected = torch.sigmoid(beta * h), torch.sigmoid(-beta * h)
    return p_chosen * (logsigmoid(beta * h) - log_target_chosen) + p_rejected * (
        logsigmoid(-beta * h) - log_target_rejected
    )


def nca_pair(c: Tensor, r: Tensor, beta: float) -> Tensor:
    """NCA (Chen et al. 2024, pairwise form): −log σ(βc) − ½ log σ(−βc) − ½ log σ(−βr)."""
    return -logsigmoid(beta * c) - 0.5 * logsigmoid(-beta * c) - 0.5 * logsigmoid(-beta * r)


def robust(h: Tensor, beta: float, epsilon: float) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, Eq. 8): [(1 − ε) ℓ(h) − ε ℓ(−h)] / (1 − 2ε), ℓ(h) = −log σ(βh)."""
    return ((1 - epsilon) * -logsigmoid(beta * h) - epsilon * -logsigmoid(-beta * h)) / (1 - 2 * epsilon)


def bco_pair(c: Tensor, r: Tensor, beta: float, delta: float | Tensor = 0.0) -> Tensor:
    """BCO (Jung et al. 2024, Eq. 6): −log σ(βc − δ) − log σ(−(βr − δ)), δ the running mean of the rewards."""
    return -logsigmoid(beta * c - delta) - logsigmoid(-(beta * r - delta))


def sppo_hard(c: Tensor, r: Tensor, beta: float, summed: bool = False) -> Tensor:
    """SPPO (Wu et al. 2024, Eq. 4.7) with hard win probabilities P = 1 / 0 and η = 1/β: each answer's squared
    error (c − 1/(2β))², (r + 1/(2β))², averaged over the pair's two answers as the authors' code does (Eq. 4.7 is an
    expectation over answers); ``summed`` adds them instead (TRL's form, twice the value)."""
    errors = (c - 0.5 / beta) ** 2 + (r + 0.5 / beta) ** 2
    return errors if summed else errors / 2


def aot(policy_margin: Tensor, ref_margin: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """AOT (Melnyk et al. 2024, paired): the sorted policy margins log π_w − log π_l against the sorted
    reference margins, in the (cDPO-smoothed) logistic loss."""
    delta = torch.sort(policy_margin).values - torch.sort(ref_margin).values
    return sigmoid(delta, beta, label_smoothing)


def aot_unpaired(c: Tensor, r: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """AOT (Melnyk et al. 2024, unpaired): sorted chosen log-ratios against sorted rejected log-ratios."""
    return sigmoid(torch.sort(c).values - torch.sort(r).values, beta, label_smoothing)


def apo_zero(c: Tensor, r: Tensor, beta: float) -> Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, Eq. 7): 1 − σ(βc) + σ(βr): chosen up, rejected down."""
    return 1 - torch.sigmoid(beta * c) + torch.sigmoid(beta * r)


def apo_down(c: Tensor, r: Tensor, beta: float) -> Tensor:
    """APO-down (D'Oosterlinck et al. 2024, Eq. 8): σ(βc) + 1 − σ(β(c − r)): both down, rejected more."""
    return torch.sigmoid(beta * c) + 1 - torch.sigmoid(beta * (c - r))


def discopop(h: Tensor, beta: float, tau: float) -> Tensor:
    """DiscoPOP / log-ratio modulated loss (Lu et al. 2024, Eq. 5): with ρ = βh and m = σ(ρ/τ),
    (1 − m)·(−log σ(ρ)) + m·exp(−ρ)."""
    rho = beta * h
    mix = torch.sigmoid(rho / tau)
    return (1 - mix) * -logsigmoid(rho) + mix * torch.exp(-rho)


def sigmoid_norm(c_mean: Tensor, r_mean: Tensor, beta: float) -> Tensor:
    """Length-normalized DPO: −log σ(β(c/|y_w| − r/|y_l|)), the log-ratios averaged per completion token."""
    return -logsigmoid(beta * (c_mean - r_mean))


def sft(chosen_token_logps: Tensor, chosen_mask: Tensor, per_token: bool = False) -> Tensor:
    """The negative log-likelihood term RPO adds to DPO (Pang et al. 2024, "Iterative Reasoning Preference
    Optimization", Eq. 1): −log π(y_w|x) / |y_w|, each chosen answer's NLL normalized by its own length, per pair.
    ``per_token`` averages over all chosen tokens of the batch instead (TRL's form: longer answers weigh more),
    returned per pair as that batch value."""
    if per_token:
        nll = -(chosen_token_logps * chosen_mask).sum() / chosen_mask.sum()
        return nll.expand(chosen_token_logps.shape[0])
    return -(chosen_token_logps * chosen_mask).sum(dim=1) / chosen_mask.sum(dim=1).clamp(min=1)


def combine(losses: list[Tensor], weights: list[float] | None = None) -> Tensor:
    """Σ_i w_i · mean(loss_i): several losses mixed (as MPO does), each averaged over the batch."""
    weights = weights or [1.0] * len(losses)
    return sum(weight * loss.mean() for loss, weight in zip(losses, weights, strict=True))
