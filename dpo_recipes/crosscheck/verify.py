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
from dpo_recipes.crosscheck.batches import OwnBatch
from dpo_recipes.crosscheck.logprobs import ld_sequence, wpo_weights
from dpo_recipes.crosscheck.scratch import sequence_token_logps, token_metrics
from dpo_recipes.crosscheck.tolerances import (
    Tolerance,
    close,
    close_loss,
    gradient_statistics,
    gradients_agree,
    tolerance_for,
)
from dpo_recipes.scoring import TokenLogps, as_reference


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
    """The loss of setting ``s``, TRL's logged reward metrics and the per-pair log-probs and rewards, from
    scratch; ``departures`` switches to TRL's variant of the named departures."""
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
    per_pair = {
        "logps/chosen": chosen_logps.detach(),
        "logps/rejected": rejected_logps.detach(),
        "rewards/chosen": rewards_c,
        "rewards/rejected": rewards_r,
    }
    metrics = {
        **{key: values.mean() for key, values in per_pair.items()},
        "rewards/margins": (rewards_c - rewards_r).mean(),
        "rewards/accuracies": (rewards_c > rewards_r).double().mean(),  # strict, as the paper's accuracy
    }
    return total, {k: float(v) for k, v in metrics.items()}, per_pair


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


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def trainable_gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().double().clone() for name, p in model.named_parameters() if p.grad is not None}


DISCRETE = {"rewards/accuracies": "pairs", "mean_token_accuracy": "chosen tokens"}


def _value_rows(trl_metrics: dict, ours: dict, tolerance: Tolerance, own: OwnBatch, tokens: TokenLogps) -> list[Row]:
    """Every logged value against ours; a discrete share may differ by ``tolerance.flips`` events, and the reward
    margin is judged at the scale of the rewards it is the difference of."""
    rows = []
    for key, value in ours.items():
        row = Row(key, trl_metrics.get(key, math.nan), value, tolerance.rtol)
        if key in DISCRETE:
            events = len(own.kept) if DISCRETE[key] == "pairs" else float(tokens.halves(tokens.mask)[0].sum())
            agrees = abs(row.trl - value) <= tolerance.flips / events + 1e-6  # + the float32 rounding of a share
        else:
            scale = max(abs(ours["rewards/chosen"]), abs(ours["rewards/rejected"])) if key == "rewards/margins" else 0
            agrees = close(row.trl, value, tolerance, scale)
        row.verdict = "ok" if agrees else "MISMATCH"
        rows.append(row)
    return rows


def _gradient_rows(trl_grads: dict, grads: dict, tolerance: Tolerance) -> list[Row]:
    ratio, direction = gradient_statistics(trl_grads, grads)
    return [
        Row(
            "grad norm ratio",
            ratio,
            1.0,
            tolerance.grad_norm,
            "ok" if abs(ratio - 1) <= tolerance.grad_norm else "MISMATCH",
            kind="gradient",
        ),
        Row(
            "grad 1 - cosine",
            direction,
            0.0,
            tolerance.grad_direction,
            "ok" if direction <= tolerance.grad_direction else "MISMATCH",
            kind="gradient",
        ),
    ]


def verify(trainer, setting: Setting, trl_batch: dict, own: OwnBatch, policy_name: str) -> Result:
    """Compare TRL on ``trl_batch`` (built by TRL's preprocessing and collator) with the from-scratch values on
    ``own`` (the same pairs, built independently), for a trainer built with ``setting``."""
    model = trainer.model
    tolerance = tolerance_for(model)
    grad_dtype = next(p.dtype for p in model.parameters() if p.requires_grad)
    model.train()
    model.zero_grad(set_to_none=True)
    trl_internals.clear_logged_metrics(trainer)
    tokens_before = trl_internals.train_tokens_seen(trainer)
    trl_loss = trainer.compute_loss(model, trl_batch)
    trl_loss.backward()
    trl_grads, trl_metrics = trainable_gradients(model), trl_internals.logged_metrics(trainer)

    with torch.no_grad(), as_reference(trainer.accelerator.unwrap_model(model), trainer.ref_model) as ref_model:
        ref_tokens = sequence_token_logps(ref_model, own)
    applicable = frozenset(d.name for d in DEPARTURES if d.applies(setting))
    candidates = {}  # departures -> (loss, metrics, gradients, per-pair values), for the paper and TRL's variant
    for departures in {frozenset(), applicable}:
        model.zero_grad(set_to_none=True)
        policy_tokens = sequence_token_logps(model, own, details=True)
        loss, metrics, per_pair = reference_loss(setting, policy_tokens, ref_tokens, departures)
        loss.backward()
        metrics.update(token_metrics(policy_tokens, own, tokens_before))
        candidates[departures] = (loss.item(), metrics, trainable_gradients(model), per_pair)

    dtype = model.get_input_embeddings().weight.dtype
    result = Result(setting.name, policy_name, f"{_name(dtype)}, gradient {_name(grad_dtype)}; {tolerance.name}")

    def agrees(candidate) -> bool:  # loss and gradient: where rounding hides a departure in the loss (cDPO's
        # small ε term at low precision), its gradient still tells the variants apart
        loss, _, grads, _ = candidate
        return close(trl_loss.item(), loss, tolerance) and gradients_agree(
            gradient_statistics(trl_grads, grads), tolerance
        )

    paper = candidates[frozenset()]
    chosen = paper
    if not agrees(paper) and applicable:
        variant = candidates[applicable]
        closer = abs(trl_loss.item() - variant[0]) < abs(trl_loss.item() - paper[0])
        if agrees(variant) or closer:  # report against the nearer of the two when neither agrees
            chosen, result.departures = variant, sorted(applicable)
    verdict = "ok" if close_loss(trl_loss.item(), chosen[0], tolerance) else "MISMATCH"
    verdict = "departure" if verdict == "ok" and result.departures else verdict
    loss_row = Row("loss", trl_loss.item(), paper[0], tolerance.loss_rtol, verdict)
    if verdict == "departure":
        loss_row.variant = chosen[0]
    result.rows.append(loss_row)
    result.rows += _value_rows(trl_metrics, chosen[1], tolerance, own, policy_tokens)
    result.rows += _gradient_rows(trl_grads, chosen[2], tolerance)
    model.zero_grad(set_to_none=True)
    result.rows.append(_per_pair_row(trainer, own, chosen[3], tolerance))
    result.rows.append(_positive_control(trl_loss.item(), chosen[0], trl_grads, chosen[2], tolerance))
    return result


def _per_pair_row(trainer, own: OwnBatch, expected: dict[str, torch.Tensor], tolerance: Tolerance) -> Row:
    """Each pair alone through TRL (a batch of one, TRL's collator): its log-probs and rewards against the
    from-scratch values of that pair, so an error that cancels in a batch mean (pairs misaligned) shows. The row
    holds the pair and quantity furthest outside the tolerance."""
    compared = []  # (TRL value, from-scratch value)
    with torch.no_grad():
        for i in range(len(own.kept)):  # TRL's i-th tokenized pair is the i-th kept one
            batch = trainer.data_collator([trainer.train_dataset[i]])
            trl_internals.clear_logged_metrics(trainer)
            trainer.compute_loss(trainer.model, {k: v.to(trainer.accelerator.device) for k, v in batch.items()})
            logged = trl_internals.logged_metrics(trainer)
            compared += [(logged[key], float(values[i])) for key, values in expected.items()]
    trl, reference = max(compared, key=lambda pair: abs(pair[0] - pair[1]) - tolerance.rtol * abs(pair[1]))
    verdict = "ok" if close(trl, reference, tolerance) else "MISMATCH"
    return Row(f"per pair ({len(own.kept)} pairs)", trl, reference, tolerance.rtol, verdict)


def _positive_control(trl_loss: float, loss: float, trl_grads, grads, tolerance: Tolerance) -> Row:
    """The check proves it can fail: TRL's loss and gradient made 1% larger must be reported as a mismatch (by
    the loss or by the gradient's norm ratio)."""
    scaled = {name: g * 1.01 for name, g in trl_grads.items()}
    seen = not close_loss(trl_loss * 1.01, loss, tolerance) or not gradients_agree(
        gradient_statistics(scaled, grads), tolerance
    )
    return Row(
        "positive control: 1% off", 0.01, 0.0, tolerance.grad_norm, "ok" if seen else "MISMATCH", kind="gradient"
    )
