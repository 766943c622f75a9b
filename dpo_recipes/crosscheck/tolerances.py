"""How far TRL and the from-scratch side may differ: a bound for every compared number, derived from the computation
on the batch at hand, on this machine, rather than a tolerance measured once on another one.

Both sides run the same weights in the same compute dtype and differ only in rounding: TRL runs the batch padded in
one forward through its fused LM head; the from-scratch side runs each sequence alone and takes the log-softmax in
float64. A bound is built in three steps:

1. **The per-token rounding noise** σ_t of a log-prob, as the quadrature sum of
   - the *layout* noise, measured: the from-scratch forward is run again with the batch in other layouts
     (right-padded in one forward as TRL lays it out, chosen and rejected apart, padded wider: `scratch.LAYOUTS`);
     σ_layout is the RMS difference of a layout's token log-probs from the one-by-one forward's, or of their
     sequence sums ÷ √n where a sequence's errors are correlated, whichever is larger, for the layout and model
     where it is largest (`measure_noise`);
   - the rounding of the logits to the model's output dtype, derived per token (`scoring._margin_and_rounding`:
     u/√3 · |z| weighted by the softmax; it is what makes bfloat16 differ);
   - a floor for a float32 forward through L layers, u₃₂ · max|z| · √(2L + 1): each layer rounds twice (attention,
     MLP), the head once.
2. **Propagation through the quantity itself**: ``VALUE_DRAWS`` draws of independent per-token errors ~ N(0, σ_t²),
   on the policy's and the reference's log-probs, go through the very code that computes each quantity (the loss,
   every logged metric, every pair's values). A quantity's bound is λ times the RMS change, so a reward margin
   inherits the noise of both rewards it is the difference of, a loss its sensitivity to each token, a sum over n
   tokens its √n. ``GRADIENT_DRAWS`` of those draws also go through the backward pass (the gradient's coefficients
   ∂L/∂log π change with the errors), and so do the other layouts themselves, which add the backward's own
   rounding; the norm ratio is never trusted below (2L + 1)·u of the compute dtype.
3. **The floor of the arithmetic**: TRL reports float32 values, each rounded at least once per operation:
   (⌈log₂ n⌉ + 4) · u₃₂ · the magnitude of the terms it was computed from.

Gradients are judged by the norm ratio ‖g_TRL‖/‖g‖ (a 1% scale error moves it by 0.01; noise nearly orthogonal to
the gradient barely moves it) within λ · RMS of the draws' ratios, and by 1 − cos within λ² · their mean (1 − cos
grows with the square of the noise). Counts of discrete events (reward accuracy, top-1 token accuracy) may differ by
the events whose deciding margin lies within its bound.

λ = 6: a Gaussian error passes 6 standard deviations with probability 2·10⁻⁹. Every result also carries a positive
control (TRL's loss and gradient made 1% larger must be reported), so a bound too wide to see a 1% error shows as a
failed check rather than a silent pass. `benchmarks/crosscheck_agreement.py` measures, in several numeric
environments, how much of each bound the real differences use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from dpo_recipes.core.scoring import TokenLogps

LAMBDA = 6.0
VALUE_DRAWS = 32
GRADIENT_DRAWS = 8
U32 = torch.finfo(torch.float32).eps / 2  # unit roundoff of float32, 2⁻²⁴


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


@dataclass
class Noise:
    """Per-token standard deviations of the rounding noise of a log-prob (policy and reference tokens), of the
    per-token entropy and mean logit, and the measured layout part (for the report)."""

    policy: Tensor
    reference: Tensor
    entropy: float
    mean_logits: float
    layout: float


def _layout_noise(a: Tensor, b: Tensor, mask: Tensor) -> float:
    """RMS over completion tokens of a − b, or RMS over sequences of Σ(a − b)/√n, whichever is larger."""
    difference = (a - b).detach() * mask
    tokens = mask.sum().clamp(min=1)
    per_token = float((difference.pow(2).sum() / tokens).sqrt())
    lengths = mask.sum(dim=1)
    kept = lengths > 0
    per_sequence = float((difference.sum(dim=1)[kept].pow(2) / lengths[kept]).mean().sqrt()) if kept.any() else 0.0
    return max(per_token, per_sequence)


def token_noise(layout: float, tokens: TokenLogps, depth: int) -> Tensor:
    """σ_t of every token: the layout noise, the logits' rounding and the float32 forward floor, in quadrature."""
    floor = U32 * tokens.max_logit * math.sqrt(2 * depth + 1)
    return (layout**2 + tokens.rounding**2 + floor**2).sqrt() * tokens.mask


def measure_noise(
    policy: TokenLogps,
    reference: TokenLogps,
    policy_layouts: list[TokenLogps],
    reference_layouts: list[TokenLogps],
    depth: int,
) -> Noise:
    """The noise model from the same sequences computed each alone (``policy``, ``reference``) and in other
    layouts (padded in one batch as TRL lays them out, …), for the policy and for the reference. The layout part
    is the largest over every layout and both models: TRL's own layout may round like any of them."""
    mask = policy.mask
    pairs = [(policy, other) for other in policy_layouts] + [(reference, other) for other in reference_layouts]
    layout = max(_layout_noise(a.logps, b.logps, mask) for a, b in pairs)
    tokens = mask.sum().clamp(min=1)

    def rms(field: str) -> float:
        squares = [((getattr(policy, field) - getattr(b, field)).detach() * mask).pow(2).sum() for b in policy_layouts]
        return float((sum(squares) / (len(squares) * tokens)).sqrt())

    rounding = float((policy.rounding.pow(2) * mask).sum().div(tokens).sqrt())
    floor = float(U32 * policy.max_logit.max() * math.sqrt(2 * depth + 1))
    return Noise(
        policy=token_noise(layout, policy, depth),
        reference=token_noise(layout, reference, depth),
        entropy=math.sqrt(rms("entropy") ** 2 + rounding**2 + floor**2),
        mean_logits=math.sqrt(rms("mean_logits") ** 2 + floor**2),
        layout=layout,
    )


def perturbed(tokens: TokenLogps, sd: Tensor, generator: torch.Generator) -> TokenLogps:
    """``tokens`` with independent errors ~ N(0, sd²) on every completion token's log-prob (and on the
    log Σπ² WPO reads)."""

    def noise() -> Tensor:
        return torch.randn(sd.shape, generator=generator, dtype=torch.float64).to(sd.device) * sd

    return replace(tokens, logps=tokens.logps.detach() + noise(), log_sum_sq_probs=tokens.log_sum_sq_probs + noise())


@dataclass
class Bounds:
    """The largest difference each compared number may show from rounding alone (absolute)."""

    values: dict[str, float]
    per_pair: dict[str, Tensor] = field(default_factory=dict)
    grad_norm: float = 0.0
    grad_direction: float = 0.0
    noise: float = 0.0  # the measured layout noise per token (report)

    def agrees(self, key: str, a: float, b: float) -> bool:
        """Within the bound of ``key``; a number with no bound (a count, the epoch) must be equal."""
        return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= self.values.get(key, 0.0)

    def gradients_agree(self, statistics: tuple[float, float]) -> bool:
        ratio, direction = statistics
        return abs(ratio - 1) <= self.grad_norm and direction <= self.grad_direction

    def renamed(self, prefix: str) -> Bounds:
        """The same bounds under TRL's prefixed metric names (``eval_loss``, ``eval_rewards/chosen``)."""
        return replace(self, values={f"{prefix}{key}": value for key, value in self.values.items()})


def arithmetic_floor(magnitude: float, terms: int) -> float:
    """TRL's float32 arithmetic: a sum of ``terms`` numbers of total ``magnitude`` rounded pairwise, then a few
    more operations."""
    return (math.ceil(math.log2(max(terms, 1))) + 4) * U32 * magnitude


def value_bounds(
    compute: Callable[[TokenLogps, TokenLogps], tuple[Tensor, dict[str, float], dict[str, Tensor]]],
    policy: TokenLogps,
    reference: TokenLogps,
    noise: Noise,
    magnitudes: dict[str, float],
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """λ · RMS change of every scalar and per-pair output of ``compute`` under ``VALUE_DRAWS`` draws of token
    noise, plus the arithmetic floor of each (``magnitudes``: the size of the terms a quantity is made of)."""
    generator = torch.Generator().manual_seed(seed)
    loss, metrics, per_pair = compute(policy, reference)
    base = {"loss": float(loss), **metrics}
    scalar_sq = dict.fromkeys(base, 0.0)
    pair_sq = {key: torch.zeros_like(values) for key, values in per_pair.items()}
    with torch.no_grad():
        for _ in range(VALUE_DRAWS):
            d_loss, d_metrics, d_pairs = compute(
                perturbed(policy, noise.policy, generator), perturbed(reference, noise.reference, generator)
            )
            drawn = {"loss": float(d_loss), **d_metrics}
            for key in base:
                scalar_sq[key] += (drawn[key] - base[key]) ** 2 / VALUE_DRAWS
            for key in per_pair:
                pair_sq[key] += (d_pairs[key] - per_pair[key]) ** 2 / VALUE_DRAWS
    terms = int(policy.mask.sum())
    scalars = {
        key: LAMBDA * math.sqrt(scalar_sq[key]) + arithmetic_floor(magnitudes.get(key, abs(base[key])), terms)
        for key in base
    }
    pairs = {key: LAMBDA * pair_sq[key].sqrt() + arithmetic_floor(magnitudes.get(key, 0.0), terms) for key in per_pair}
    return scalars, pairs


def gradient_statistics(trl: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(‖g_TRL‖ / ‖g‖, 1 − cos(g_TRL, g)) over all trainable parameters."""
    a = torch.cat([trl[name].flatten() for name in sorted(ours)])
    b = torch.cat([ours[name].flatten() for name in sorted(ours)])
    ratio = float(a.norm() / b.norm().clamp(min=1e-30))
    return ratio, float(1 - torch.nn.functional.cosine_similarity(a, b, dim=0))


def gradient_bounds(
    gradient: dict[str, Tensor],
    drawn: list[dict[str, Tensor]],
    other_layouts: list[dict[str, Tensor]],
    compute_dtype: torch.dtype,
    depth: int,
) -> tuple[float, float]:
    """(norm-ratio bound, 1 − cos bound) of a gradient, from two sources of error taken in quadrature: the draws of
    value noise (``drawn``: their coefficients ∂L/∂log π moved by rounding-sized errors) and the backward's own
    rounding (``other_layouts``: the same gradient through other layouts' forwards). Norm ratio: λ · √(RMS² of the
    draws' |ratio − 1| + RMS² of the layouts'), above (2L + 1)·u of the compute dtype (the backward through L
    layers rounds at every stage, and the stages' errors may add up along the gradient); 1 − cos: λ² · (mean of
    the draws' + mean of the layouts'), above (4u)²."""

    def statistics(gradients: list[dict[str, Tensor]]) -> tuple[float, float]:
        stats = [gradient_statistics(g, gradient) for g in gradients]
        return sum((r - 1) ** 2 for r, _ in stats) / len(stats), sum(d for _, d in stats) / len(stats)

    (drawn_sq, drawn_direction), (layout_sq, layout_direction) = statistics(drawn), statistics(other_layouts)
    unit = unit_roundoff(compute_dtype)
    ratio = LAMBDA * math.sqrt(drawn_sq + layout_sq) + (2 * depth + 1) * unit
    return ratio, LAMBDA**2 * (drawn_direction + layout_direction) + (4 * unit) ** 2


def compute_dtype(model) -> torch.dtype:
    """The lowest precision that takes part in the forward: the weights' or the trainable adapters' dtype
    (QLoRA's adapters are bfloat16 even when the base computes in float32)."""
    dtypes = {model.get_input_embeddings().weight.dtype}
    dtypes |= {p.dtype for p in model.parameters() if p.requires_grad and p.dtype.is_floating_point}
    return max(dtypes, key=unit_roundoff)


def allowed_flips(margins: Tensor, bounds: Tensor) -> int:
    """Discrete events (a reward comparison, a top-1 choice) whose deciding margin lies within its bound."""
    return int((margins.abs() <= bounds).sum())
