"""Verify TRL's DPO numbers on a fixed batch against the from-scratch implementation.

TRL computes the loss, its logged metrics and the gradient (``DPOTrainer.compute_loss`` + backward) on a
batch built by TRL's own preprocessing and collator; the same quantities are then computed from scratch
(`logprobs`, `losses`) on the same model and batch. Where TRL differs from a paper by design, the difference
is a named `Departure`: its TRL-style variant is computed from scratch too, and TRL must match *it*.
Only a difference that matches neither is a failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dpo_recipes import trl_internals
from dpo_recipes.crosscheck import losses
from dpo_recipes.crosscheck.logprobs import ld_sequence, wpo_weights
from dpo_recipes.scoring import TokenLogps, as_reference, token_logps

# Relative and absolute tolerance per compute dtype. fp32: TRL's fused LM head and the reference's full
# logits differ only in summation order (~1e-7 per token); summed over a few dozen tokens and through exp /
# sigmoid that stays below 1e-5. bf16 keeps 8 bits of mantissa (relative rounding 2^-8 ≈ 4e-3 per op), so
# agreement is only expected to about 2e-2.
TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2)}
# Relative L2 error of the whole gradient, by the lowest precision on the gradient's path (compute or
# trainable weights): TRL's fused-head backward and the reference's full-logits backward sum in different
# orders. Measured over all 26 settings on the tiny model: fp32 ≤ 7.2e-6 (LoRA, full); bf16 adapters (QLoRA)
# ≤ 4.2e-3; a bf16 base ≤ 6.8e-3.
GRADIENT_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class Setting:
    """One DPOConfig loss configuration to verify."""

    loss_type: tuple[str, ...] = ("sigmoid",)
    loss_weights: tuple[float, ...] | None = None
    beta: float = 0.1
    label_smoothing: float = 0.0
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5
    ld_alpha: float | None = None
    use_weighting: bool = False
    discopop_tau: float = 0.05

    @property
    def name(self) -> str:
        defaults = Setting()
        parts = ["+".join(self.loss_type)]
        parts += [f"{k}={v}" for k, v in vars(self).items() if k != "loss_type" and v != getattr(defaults, k)]
        return " ".join(parts)

    def dpo_config_kwargs(self) -> dict:
        kwargs = {k: v for k, v in vars(self).items() if k != "loss_weights"}
        kwargs["loss_type"] = list(self.loss_type)
        if self.loss_weights is not None:
            kwargs["loss_weights"] = list(self.loss_weights)
        return kwargs


@dataclass(frozen=True)
class Departure:
    """A documented difference between TRL 1.16 and a paper, and when it applies."""

    name: str
    applies: Callable[[Setting], bool]
    explanation: str


DEPARTURES = (
    Departure(
        "cdpo_label_smoothing_ignored",
        lambda s: "sigmoid" in s.loss_type and s.label_smoothing > 0,
        "TRL 1.16's sigmoid loss ignores label_smoothing: cDPO's −ε·log σ(−βh) term is absent "
        "(label_smoothing is read only by robust, exo_pair and aot), so the run trains plain DPO.",
    ),
    Departure(
        "ipo_length_normalized",
        lambda s: "ipo" in s.loss_type,
        "TRL divides each completion's log-ratio by its token count before IPO's squared loss (its comment "
        "cites the IPO authors); Eq. 17 uses sequence log-ratios, so TRL's 1/(2τ) target is a per-token margin.",
    ),
    Departure(
        "bco_without_reward_shift",
        lambda s: "bco_pair" in s.loss_type,
        "BCO subtracts δ, a running mean of the rewards, inside both sigmoids; TRL 1.16's bco_pair has no δ. "
        "The paper value here uses δ = this batch's mean reward (the running mean's first value).",
    ),
)
CONVENTIONS = (
    "f_alpha_divergence_coef is 1 − α of the f-DPO paper: TRL's f'(u) = (u^(c−1) − 1)/(c − 1) is the paper's "
    "(1 − u^(−α))/α with α = 1 − c (identical values once mapped).",
    "rewards/accuracies counts strict r_chosen > r_rejected: it reads 0.0, not 0.5, when all log-ratios are "
    "equal (for example before training, when the policy is the reference).",
)


def reference_loss(s: Setting, policy: TokenLogps, ref: TokenLogps, departures: frozenset[str] = frozenset()):
    """The loss of setting ``s`` and TRL's logged metrics, from scratch; ``departures`` switches to TRL's
    variant of the named departures."""
    if s.ld_alpha is None:
        policy_logps, ref_logps = policy.sequence(), ref.sequence()
    else:
        policy_logps, ref_logps = ld_sequence(policy, s.ld_alpha), ld_sequence(ref, s.ld_alpha)
    chosen_logps, rejected_logps = policy.halves(policy_logps)
    ref_chosen, ref_rejected = ref.halves(ref_logps)
    c, r = chosen_logps - ref_chosen, rejected_logps - ref_rejected
    alpha = 1 - s.f_alpha_divergence_coef  # TRL's coefficient → the paper's α
    score_c = losses.f_scores(c, s.f_divergence_type, alpha)
    score_r = losses.f_scores(r, s.f_divergence_type, alpha)
    h = score_c - score_r
    chosen_len, rejected_len = policy.halves(policy.lengths())
    smoothing = 0.0 if "cdpo_label_smoothing_ignored" in departures else s.label_smoothing

    def one(loss_type: str) -> torch.Tensor:
        if loss_type == "sigmoid":
            return losses.sigmoid(h, s.beta, smoothing)
        if loss_type == "ipo":
            if "ipo_length_normalized" in departures:
                return losses.ipo(score_c / chosen_len.clamp(min=1) - score_r / rejected_len.clamp(min=1), s.beta)
            return losses.ipo(h, s.beta)
        if loss_type == "bco_pair":
            delta = 0.0 if "bco_without_reward_shift" in departures else torch.cat([s.beta * c, s.beta * r]).mean()
            return losses.bco_pair(c, r, s.beta, delta.detach() if torch.is_tensor(delta) else delta)
        if loss_type == "aot":
            margin = chosen_logps - rejected_logps
            return losses.aot(margin, ref_chosen - ref_rejected, s.beta, s.label_smoothing)
        if loss_type == "sft":
            return losses.sft(policy.halves(policy.logps)[0], policy.halves(policy.mask)[0])
        if loss_type == "sigmoid_norm":
            return losses.sigmoid_norm(score_c / chosen_len.clamp(min=1), score_r / rejected_len.clamp(min=1), s.beta)
        simple = {
            "hinge": lambda: losses.hinge(h, s.beta),
            "exo_pair": lambda: losses.exo_pair(h, s.beta, s.label_smoothing),
            "nca_pair": lambda: losses.nca_pair(c, r, s.beta),
            "robust": lambda: losses.robust(h, s.beta, s.label_smoothing),
            "sppo_hard": lambda: losses.sppo_hard(c, r, s.beta),
            "aot_unpaired": lambda: losses.aot_unpaired(c, r, s.beta, s.label_smoothing),
            "apo_zero": lambda: losses.apo_zero(c, r, s.beta),
            "apo_down": lambda: losses.apo_down(c, r, s.beta),
            "discopop": lambda: losses.discopop(h, s.beta, s.discopop_tau),
        }
        return simple[loss_type]()

    per_type = [one(loss_type) for loss_type in s.loss_type]
    if s.use_weighting:
        weight_c, weight_r = policy.halves(wpo_weights(policy))
        per_type = [loss * weight_c * weight_r for loss in per_type]
    total = losses.combine(per_type, list(s.loss_weights) if s.loss_weights else None)
    rewards_c, rewards_r = s.beta * c.detach(), s.beta * r.detach()
    metrics = {
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
        "rewards/chosen": rewards_c.mean(),
        "rewards/rejected": rewards_r.mean(),
        "rewards/margins": (rewards_c - rewards_r).mean(),
        "rewards/accuracies": (rewards_c > rewards_r).double().mean(),
    }
    return total, {k: float(v) for k, v in metrics.items()}


@dataclass
class Row:
    quantity: str
    trl: float
    reference: float
    tolerance: float
    verdict: str = "ok"
    variant: float | None = None  # TRL-style value under the applicable departures
    kind: str = "value"  # or "gradient": ``trl`` is then a whole-gradient statistic, judged against ``tolerance``

    @property
    def abs_err(self) -> float:
        return abs(self.trl - self.reference)

    @property
    def rel_err(self) -> float | None:
        return None if self.kind == "gradient" else self.abs_err / max(abs(self.reference), 1e-12)


@dataclass
class Result:
    setting: str
    policy: str
    dtype: str
    rows: list[Row] = field(default_factory=list)
    departures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.verdict != "MISMATCH" for row in self.rows)


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol + rtol * abs(b)


def _known(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in TOLERANCES else torch.float32


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().double().clone() for name, p in model.named_parameters() if p.grad is not None}


def _compare_gradients(trl: dict, ref: dict) -> tuple[float, float]:
    """Relative L2 error and cosine similarity of two gradients over all trainable parameters."""
    a = torch.cat([trl[name].flatten() for name in sorted(ref)])
    b = torch.cat([ref[name].flatten() for name in sorted(ref)])
    return float((a - b).norm() / b.norm().clamp(min=1e-30)), float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def verify(trainer, setting: Setting, batch: dict, policy_name: str) -> Result:
    """Compare TRL and the reference on ``batch`` (a TRL-collated batch) for a trainer built with ``setting``."""
    model = trainer.model
    # Values follow the compute dtype; the gradient follows the trainable weights (QLoRA adapters are bf16).
    dtype = _known(model.get_input_embeddings().weight.dtype)
    grad_dtype = _known(next(p.dtype for p in model.parameters() if p.requires_grad))
    rtol, atol = TOLERANCES[dtype]
    model.train()
    model.zero_grad(set_to_none=True)
    trl_internals.clear_logged_metrics(trainer)
    trl_loss = trainer.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = _gradients(model)
    trl_metrics = trl_internals.logged_metrics(trainer)

    ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    with torch.no_grad(), as_reference(trainer.accelerator.unwrap_model(model), trainer.ref_model) as ref_model:
        ref_tokens = token_logps(ref_model, ids, attention, completion)
    applicable = frozenset(d.name for d in DEPARTURES if d.applies(setting))
    candidates = {}  # departures -> (loss, metrics, gradients), for the paper and TRL's documented variant
    for departures in {frozenset(), applicable}:
        model.zero_grad(set_to_none=True)
        policy_tokens = token_logps(model, ids, attention, completion)
        loss, metrics = reference_loss(setting, policy_tokens, ref_tokens, departures)
        loss.backward()
        candidates[departures] = (loss.item(), metrics, _gradients(model))

    grad_tol = max(GRADIENT_TOLERANCE[dtype], GRADIENT_TOLERANCE[grad_dtype])

    def agrees(candidate) -> bool:
        loss, _, grads = candidate
        return _close(trl_loss.item(), loss, rtol, atol) and _compare_gradients(trl_grads, grads)[0] <= grad_tol

    result = Result(setting.name, policy_name, f"{_name(dtype)}, gradient {_name(grad_dtype)}")
    paper = candidates[frozenset()]
    chosen, verdict = paper, "ok" if agrees(paper) else "MISMATCH"
    if verdict == "MISMATCH" and applicable and agrees(candidates[applicable]):
        chosen, verdict, result.departures = candidates[applicable], "departure", sorted(applicable)
    loss_row = Row("loss", trl_loss.item(), paper[0], rtol, verdict)
    if verdict == "departure":
        loss_row.variant = chosen[0]
    result.rows.append(loss_row)
    for key, value in paper[1].items():
        row = Row(key, trl_metrics[key], value, rtol)
        row.verdict = "ok" if _close(row.trl, value, rtol, atol) else "MISMATCH"
        result.rows.append(row)
    rel, cosine = _compare_gradients(trl_grads, chosen[2])
    grad_verdict = "ok" if rel <= grad_tol else "MISMATCH"
    result.rows.append(Row("grad rel. L2 error", rel, 0.0, grad_tol, grad_verdict, kind="gradient"))
    result.rows.append(Row("grad cosine", cosine, 1.0, grad_tol, grad_verdict, kind="gradient"))
    model.zero_grad(set_to_none=True)
    return result
