"""How close TRL and the from-scratch side must agree, per precision, calibrated on measured agreement.

Both sides run the same weights; they differ only in how they sum (TRL's fused LM head and its sums in the
compute dtype; float64 here). So the tolerance depends on the compute precision, and was set from the worst
agreement measured over every loss type and option on the tiny model (`benchmarks/crosscheck_agreement.py`
prints the table; README "Cross-check" quotes it), with a margin of about 3×:

- values (log-probs, rewards, entropy, logits): |TRL − ours| ≤ atol + rtol·|ours|; the loss has its own pair,
  tight enough that a 1% error in it always shows;
- counts of discrete events (reward accuracy, top-1 token accuracy): up to ``flips`` pairs or tokens may flip
  where rounding decides a near-tie;
- gradients: by two statistics that separate a scale error from rounding noise. The norm ratio ‖g_TRL‖/‖g‖ moves
  by the full size of a scale error (a 1% error: 1.01) while noise, nearly orthogonal to the gradient, moves it
  by its square; 1 − cosine measures direction errors.

A positive control in every result injects a 1% error into TRL's loss and gradient and must be reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    name: str
    loss_rtol: float  # the loss: |TRL − ours| ≤ loss_atol + loss_rtol·|ours|
    loss_atol: float
    rtol: float  # every other value
    atol: float
    flips: int  # discrete events allowed to differ (pairs for reward accuracy, tokens for token accuracy)
    grad_norm: float  # |‖g_TRL‖ / ‖g‖ − 1|
    grad_direction: float  # 1 − cos(g_TRL, g)


# Worst agreement measured over all 26 settings (README "Cross-check"), and the tolerance set from it: float32
# loss 6.5e-6 relative, gradient norm 6.5e-6; 4-bit loss 1.2e-4, log-probs 1.1e-3 absolute, gradient norm 4.7e-4;
# bfloat16 compute loss 2.5e-3 (7e-4 with a 4-bit base), log-probs 2.1e-2 absolute, gradient norm 5.2e-3;
# bfloat16 weights loss 2.7e-3, gradient norm 9.8e-3. Each loss tolerance stays below 1%, so that the positive
# control holds at every precision.
FLOAT32 = Tolerance("float32", 1e-5, 1e-6, 1e-5, 1e-5, flips=0, grad_norm=1e-4, grad_direction=1e-6)
# A 4-bit NF4 base with bfloat16 adapters: float32 compute, but bitsandbytes' CPU kernels and the bfloat16
# adapter weights round differently on the two sides (gradient direction 2.8e-5; an optimizer update, rounded to
# the bfloat16 adapters, 1.2e-4).
FOUR_BIT = Tolerance(
    "4-bit base, bfloat16 adapters", 5e-4, 1e-4, 1e-4, 3e-3, flips=1, grad_norm=2e-3, grad_direction=5e-4
)
# bfloat16 compute: TRL sums per-token log-probs in bfloat16 (8 bits of mantissa: a sum of ~50 nats is rounded
# to a multiple of 0.25), so a single pair's log-prob agrees only to about 2⁻⁹ ≈ 2e-3 relative (8e-2 measured on
# one pair of 52 nats); batch means and the loss, to about 3e-3.
BFLOAT16 = Tolerance("bfloat16 compute", 4e-3, 2e-4, 4e-3, 1e-2, flips=1, grad_norm=7e-3, grad_direction=1e-3)
# bfloat16 weights (a full fine-tune in bfloat16): the gradient itself is rounded to bfloat16, and so is an
# optimizer update (the accumulation check compares updates: 3.1e-3 in direction against the micro-batch mean,
# 1.8e-2 against the full batch, so 6e-3 still tells them apart).
BFLOAT16_WEIGHTS = Tolerance("bfloat16 weights", 5e-3, 1e-3, 4e-3, 1e-2, flips=1, grad_norm=2e-2, grad_direction=6e-3)


# Packed against padded, float32: the same weights and kernels on the same tokens, only laid out differently
# (measured: loss and metrics identical, gradient norm ratio 1 + 8e-9).
PACKED_FLOAT32 = Tolerance(
    "float32, packed vs padded", 1e-6, 1e-7, 1e-6, 1e-7, flips=0, grad_norm=1e-6, grad_direction=1e-9
)


def tolerance_for(model) -> Tolerance:
    """The precision class of a (possibly PEFT-wrapped) model: compute dtype, trainable dtype, a 4-bit base."""
    if model.get_input_embeddings().weight.dtype == torch.bfloat16:
        trainable = next(p.dtype for p in model.parameters() if p.requires_grad)
        quantized = any(type(module).__name__ == "Linear4bit" for module in model.modules())
        return BFLOAT16_WEIGHTS if trainable == torch.bfloat16 and not quantized else BFLOAT16
    quantized = any(type(module).__name__ == "Linear4bit" for module in model.modules())
    return FOUR_BIT if quantized else FLOAT32


def close_loss(a: float, b: float, tolerance: Tolerance) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tolerance.loss_atol + tolerance.loss_rtol * abs(b)


def close(a: float, b: float, tolerance: Tolerance, scale: float = 0.0) -> bool:
    """|a − b| ≤ atol + rtol·max(|b|, scale): ``scale`` is the size of the terms a difference was taken of (a
    reward margin is a difference of rewards, and inherits their rounding, not its own size's)."""
    bound = tolerance.atol + tolerance.rtol * max(abs(b), scale)
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= bound


def gradient_statistics(trl: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(‖g_TRL‖ / ‖g‖, 1 − cos(g_TRL, g)) over all trainable parameters."""
    a = torch.cat([trl[name].flatten() for name in sorted(ours)])
    b = torch.cat([ours[name].flatten() for name in sorted(ours)])
    ratio = float(a.norm() / b.norm().clamp(min=1e-30))
    return ratio, float(1 - torch.nn.functional.cosine_similarity(a, b, dim=0))


def gradients_agree(statistics: tuple[float, float], tolerance: Tolerance) -> bool:
    ratio, direction = statistics
    return abs(ratio - 1) <= tolerance.grad_norm and direction <= tolerance.grad_direction
