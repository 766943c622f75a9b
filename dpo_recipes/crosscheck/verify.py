"""Verify TRL's DPO numbers on a fixed batch against the from-scratch implementation.

TRL computes the loss, its logged metrics and the gradient (``DPOTrainer.compute_loss`` + backward) on a
batch built by TRL's own preprocessing and collator; the same quantities are then computed from scratch
(`logprobs`, `losses`) on the same model and batch. Where TRL differs from a paper by design, the difference
is a named `Departure`: its TRL-style variant is computed from scratch too, and TRL must match *it*.
Only a difference that matches neither is a failure.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from dpo_recipes.core import trl_internals
from dpo_recipes.core.scoring import TokenLogps, as_reference
from dpo_recipes.crosscheck import losses
from dpo_recipes.crosscheck.batches import OwnBatch
from dpo_recipes.crosscheck.logprobs import ld_sequence, pair_weights
from dpo_recipes.crosscheck.scratch import LAYOUTS, batched_token_logps, sequence_token_logps, token_metrics
from dpo_recipes.crosscheck.tolerances import (
    GRADIENT_DRAWS,
    LAMBDA,
    U32,
    Bounds,
    Noise,
    allowed_flips,
    arithmetic_floor,
    compute_dtype,
    gradient_bounds,
    gradient_statistics,
    measure_noise,
    perturbed,
    value_bounds,
)


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
    Departure(
        "wpo_weight_unclamped",
        lambda s: s.use_weighting,
        "WPO's pair weight w(y_w)·w(y_l) is clamped at 1 in the WPO authors' code (and in TRL 0.x); "
        "TRL 1.16 leaves it unclamped, so pairs the policy finds likely weigh more than 1.",
    ),
    Departure(
        "ld_alpha_on_reference",
        lambda s: s.ld_alpha is not None and s.ld_alpha != 1,
        "LD-DPO (Liu et al. 2024) down-weights the tail tokens of the policy's log-likelihood by α; LLaMA-Factory's "
        "implementation and TRL 0.x leave the reference's log-likelihood a plain sum. TRL 1.16 weights the "
        "reference's tail tokens by α as well.",
    ),
    Departure(
        "sft_nll_per_token",
        lambda s: "sft" in s.loss_type,
        "RPO's NLL term (Pang et al. 2024, Eq. 1) normalizes each chosen answer's NLL by its own length, then "
        "averages over pairs; TRL 1.16's sft loss averages over all chosen tokens of the batch, so longer answers "
        "weigh more (equal only when every chosen answer has the same length).",
    ),
    Departure(
        "sppo_hard_sum",
        lambda s: "sppo_hard" in s.loss_type,
        "SPPO's hard-label loss in the SPPO authors' code is the mean of the two answers' squared errors, "
        "((c − 1/(2β))² + (r + 1/(2β))²)/2; TRL 1.16 sums them (twice the value and the gradient).",
    ),
    Departure(
        "exo_epsilon_from_label_smoothing",
        lambda s: "exo_pair" in s.loss_type,
        "EXO-pref's target distribution in the EXO authors' code has log-weights 0 (chosen) and log ε = −10 "
        "(rejected), unnormalized; TRL 1.16 takes ε from label_smoothing and uses (log(1 − ε), log ε).",
    ),
    Departure(
        "rewards_not_length_normalized",
        lambda s: set(s.loss_type) == {"sigmoid_norm"},
        "A length-normalized objective's implicit reward is β·log-ratio/|y| (the quantity its sigmoid compares); "
        "TRL 1.16 logs the summed β·log-ratio for every loss type, so rewards/* of sigmoid_norm are not the "
        "rewards it trains on (and rewards/accuracies can disagree with its loss).",
    ),
)
CONVENTIONS = (
    "f_alpha_divergence_coef is 1 − α of the f-DPO paper: TRL's f'(u) = (u^(c−1) − 1)/(c − 1) is the paper's "
    "(1 − u^(−α))/α with α = 1 − c (identical values once mapped).",
    "rewards/accuracies counts strict r_chosen > r_rejected: it reads 0.0, not 0.5, when all log-ratios are "
    "equal (for example before training, when the policy is the reference).",
)


def _sequence_logps(s: Setting, policy: TokenLogps, ref: TokenLogps, departures: frozenset[str]):
    """log π(y|x) and log π_ref(y|x) per sequence: sums, or LD-DPO's weighted sums (of the policy; of the
    reference too under ``ld_alpha_on_reference``)."""
    if s.ld_alpha is None:
        return policy.sequence(), ref.sequence()
    ref_logps = ld_sequence(ref, s.ld_alpha) if "ld_alpha_on_reference" in departures else ref.sequence()
    return ld_sequence(policy, s.ld_alpha), ref_logps


def reference_loss(s: Setting, policy: TokenLogps, ref: TokenLogps, departures: frozenset[str] = frozenset()):
    """The loss of setting ``s``, TRL's logged reward metrics and the per-pair log-probs and rewards, from
    scratch; ``departures`` switches to TRL's variant of the named departures."""
    policy_logps, ref_logps = _sequence_logps(s, policy, ref, departures)
    chosen_logps, rejected_logps = policy.halves(policy_logps)
    ref_chosen, ref_rejected = ref.halves(ref_logps)
    c, r = chosen_logps - ref_chosen, rejected_logps - ref_rejected
    alpha = 1 - s.f_alpha_divergence_coef  # TRL's coefficient → the paper's α
    score_c = losses.f_scores(c, s.f_divergence_type, alpha)
    score_r = losses.f_scores(r, s.f_divergence_type, alpha)
    h = score_c - score_r
    chosen_len, rejected_len = (length.clamp(min=1) for length in policy.halves(policy.lengths()))
    smoothing = 0.0 if "cdpo_label_smoothing_ignored" in departures else s.label_smoothing

    def one(loss_type: str) -> torch.Tensor:
        if loss_type == "sigmoid":
            return losses.sigmoid(h, s.beta, smoothing)
        if loss_type == "ipo":
            if "ipo_length_normalized" in departures:
                return losses.ipo(score_c / chosen_len - score_r / rejected_len, s.beta)
            return losses.ipo(h, s.beta)
        if loss_type == "bco_pair":
            delta = 0.0 if "bco_without_reward_shift" in departures else torch.cat([s.beta * c, s.beta * r]).mean()
            return losses.bco_pair(c, r, s.beta, delta.detach() if torch.is_tensor(delta) else delta)
        if loss_type == "aot":
            margin = chosen_logps - rejected_logps
            return losses.aot(margin, ref_chosen - ref_rejected, s.beta, s.label_smoothing)
        if loss_type == "sft":
            per_token = "sft_nll_per_token" in departures
            return losses.sft(policy.halves(policy.logps)[0], policy.halves(policy.mask)[0], per_token)
        if loss_type == "sigmoid_norm":
            return losses.sigmoid_norm(score_c / chosen_len, score_r / rejected_len, s.beta)
        if loss_type == "exo_pair":
            if "exo_epsilon_from_label_smoothing" in departures:
                epsilon = s.label_smoothing
                return losses.exo_pair(h, s.beta, math.log1p(-epsilon), math.log(epsilon))
            return losses.exo_pair(h, s.beta)
        simple = {
            "hinge": lambda: losses.hinge(h, s.beta),
            "nca_pair": lambda: losses.nca_pair(c, r, s.beta),
            "robust": lambda: losses.robust(h, s.beta, s.label_smoothing),
            "sppo_hard": lambda: losses.sppo_hard(c, r, s.beta, summed="sppo_hard_sum" in departures),
            "aot_unpaired": lambda: losses.aot_unpaired(c, r, s.beta, s.label_smoothing),
            "apo_zero": lambda: losses.apo_zero(c, r, s.beta),
            "apo_down": lambda: losses.apo_down(c, r, s.beta),
            "discopop": lambda: losses.discopop(h, s.beta, s.discopop_tau),
        }
        return simple[loss_type]()

    per_type = [one(loss_type) for loss_type in s.loss_type]
    if s.use_weighting:
        weights = pair_weights(policy, clamped="wpo_weight_unclamped" not in departures)
        per_type = [loss * weights for loss in per_type]
    total = losses.combine(per_type, list(s.loss_weights) if s.loss_weights else None)
    rewards_c, rewards_r = s.beta * c.detach(), s.beta * r.detach()
    if set(s.loss_type) == {"sigmoid_norm"} and "rewards_not_length_normalized" not in departures:
        rewards_c, rewards_r = rewards_c / chosen_len, rewards_r / rejected_len
    per_pair = {
        "logps/chosen": chosen_logps.detach(),
        "logps/rejected": rejected_logps.detach(),
        "rewards/chosen": rewards_c,
        "rewards/rejected": rewards_r,
        "rewards/margins": rewards_c - rewards_r,
    }
    metrics = {
        **{key: values.mean() for key, values in per_pair.items()},
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
        """No unexplained difference. (A check too coarse to see a 1% error is reported as `sensitive` False,
        not as a failure of TRL.)"""
        return all(row.verdict != "MISMATCH" for row in self.rows)

    @property
    def sensitive(self) -> bool:
        return all(row.verdict != INSENSITIVE for row in self.rows)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def trainable_gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().double().clone() for name, p in model.named_parameters() if p.grad is not None}


DISCRETE = ("rewards/accuracies", "mean_token_accuracy")


@dataclass
class Sides:
    """The from-scratch forwards of one batch: per-token views of the policy (with its graph) and the reference,
    each sequence alone (``a``, what the check compares) and in the other layouts of `scratch.LAYOUTS`, and the
    rounding noise measured between them (`tolerances.measure_noise`)."""

    own: OwnBatch
    policy_a: TokenLogps
    ref_a: TokenLogps
    policy_layouts: list[TokenLogps]
    ref_layouts: list[TokenLogps]
    noise: Noise
    parameters: dict[str, torch.nn.Parameter]
    grad_dtype: torch.dtype
    compute_dtype: torch.dtype
    depth: int
    tokens_before: int = 0


def scratch_sides(trainer, own: OwnBatch, tokens_before: int = 0) -> Sides:
    """Both layouts of ``own`` through the trainer's policy and its reference (`as_reference`)."""
    model = trainer.model
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad(), as_reference(trainer.accelerator.unwrap_model(model), trainer.ref_model) as ref_model:
        ref_a = sequence_token_logps(ref_model, own, details=True)
        ref_layouts = [batched_token_logps(ref_model, own, True, *layout) for layout in LAYOUTS.values()]
    policy_a = sequence_token_logps(model, own, details=True)
    policy_layouts = [batched_token_logps(model, own, True, *layout) for layout in LAYOUTS.values()]
    depth = model.config.get_text_config().num_hidden_layers
    noise = measure_noise(policy_a, ref_a, policy_layouts, ref_layouts, depth)
    grad_dtype = next(iter(parameters.values())).dtype
    return Sides(
        own,
        policy_a,
        ref_a,
        policy_layouts,
        ref_layouts,
        noise,
        parameters,
        grad_dtype,
        compute_dtype(model),
        depth,
        tokens_before,
    )


def _leaf(tokens: TokenLogps) -> TokenLogps:
    """The per-token log-probs cut from the model's graph, as a leaf the loss is differentiated by."""
    return replace(tokens, logps=tokens.logps.detach().requires_grad_())


def _model_gradient(loss: torch.Tensor, leaf: TokenLogps, with_graph: TokenLogps, parameters: dict) -> dict:
    """∇_θ loss by the chain rule: ∂loss/∂log π from the leaf, then back through the model's forward."""
    (coefficients,) = torch.autograd.grad(loss, leaf.logps)
    grads = torch.autograd.grad(
        with_graph.logps, list(parameters.values()), coefficients, retain_graph=True, allow_unused=True
    )
    return {
        name: (torch.zeros_like(p) if g is None else g).detach().double()
        for (name, p), g in zip(parameters.items(), grads, strict=True)
    }


@dataclass
class Candidate:
    """The from-scratch values of a setting under a set of departures, and their bounds."""

    departures: frozenset[str]
    loss: float
    metrics: dict[str, float]
    gradients: dict[str, torch.Tensor]
    per_pair: dict[str, torch.Tensor]
    bounds: Bounds


def _token_metric_bounds(sides: Sides, magnitudes: dict[str, float]) -> dict[str, float]:
    """Entropy and mean logits are averages over completion tokens: λ·σ/√n, above the arithmetic floor;
    the token count is exact; top-1 accuracy may flip on tokens whose logit margin is within √2·λ·σ_t."""
    mask = sides.policy_a.mask
    chosen_mask, rejected_mask = sides.policy_a.halves(mask)
    n, n_chosen, n_rejected = (float(m.sum().clamp(min=1)) for m in (mask, chosen_mask, rejected_mask))
    chosen_noise, _ = sides.policy_a.halves(sides.noise.policy)
    chosen_margins, _ = sides.policy_a.halves(sides.policy_a.top1_margin)
    flips = allowed_flips(chosen_margins[chosen_mask.bool()], (2**0.5 * LAMBDA * chosen_noise)[chosen_mask.bool()])
    return {
        "entropy": LAMBDA * sides.noise.entropy / n**0.5 + arithmetic_floor(magnitudes["entropy"], int(n)),
        "logits/chosen": LAMBDA * sides.noise.mean_logits / n_chosen**0.5
        + arithmetic_floor(magnitudes["logits/chosen"], int(n_chosen)),
        "logits/rejected": LAMBDA * sides.noise.mean_logits / n_rejected**0.5
        + arithmetic_floor(magnitudes["logits/rejected"], int(n_rejected)),
        "mean_token_accuracy": flips / n_chosen + 4 * U32,
        "num_tokens": 0.0,
    }


def scratch_candidate(setting: Setting, sides: Sides, departures: frozenset[str] = frozenset()) -> Candidate:
    """Loss, metrics, gradient and per-pair values of ``setting`` from scratch, and a bound for each."""

    def compute(policy: TokenLogps, ref: TokenLogps):
        return reference_loss(setting, policy, ref, departures)

    leaf = _leaf(sides.policy_a)
    loss, metrics, per_pair = compute(leaf, sides.ref_a)
    gradients = _model_gradient(loss, leaf, sides.policy_a, sides.parameters)
    metrics.update(token_metrics(sides.policy_a, sides.own, sides.tokens_before))
    mask = sides.policy_a.mask
    sums = float((sides.policy_a.logps.abs() + sides.ref_a.logps.abs()).mul(mask).sum()) / (len(sides.own.kept) or 1)
    magnitudes = {key: abs(value) for key, value in metrics.items()}
    magnitudes.update({key: sums * (setting.beta if "rewards" in key else 1.0) for key in per_pair})
    values, pair_bounds = value_bounds(compute, leaf, sides.ref_a, sides.noise, magnitudes)
    values.update(_token_metric_bounds(sides, magnitudes))
    margins = per_pair["rewards/margins"]
    values["rewards/accuracies"] = allowed_flips(margins, pair_bounds["rewards/margins"]) / len(margins) + 4 * U32

    generator = torch.Generator().manual_seed(1)
    perturbed_gradients = []
    for _ in range(GRADIENT_DRAWS):
        drawn = _leaf(perturbed(leaf, sides.noise.policy, generator))
        drawn_loss, _, _ = compute(drawn, perturbed(sides.ref_a, sides.noise.reference, generator))
        perturbed_gradients.append(_model_gradient(drawn_loss, drawn, sides.policy_a, sides.parameters))
    layout_gradients = []
    for policy, ref in zip(sides.policy_layouts, sides.ref_layouts, strict=True):
        leaf_layout = _leaf(policy)
        layout_loss = compute(leaf_layout, ref)[0]
        layout_gradients.append(_model_gradient(layout_loss, leaf_layout, policy, sides.parameters))
    grad_norm, grad_direction = gradient_bounds(
        gradients, perturbed_gradients, layout_gradients, sides.compute_dtype, sides.depth
    )
    bounds = Bounds(values, pair_bounds, grad_norm, grad_direction, noise=sides.noise.layout)
    return Candidate(departures, float(loss), metrics, gradients, per_pair, bounds)


def _value_rows(trl_metrics: dict, candidate: Candidate) -> list[Row]:
    """Every logged value against ours, within its bound (a discrete share: within the events that may flip)."""
    rows = []
    for key, value in candidate.metrics.items():
        row = Row(key, trl_metrics.get(key, math.nan), value, candidate.bounds.values[key])
        row.verdict = "ok" if candidate.bounds.agrees(key, row.trl, value) else "MISMATCH"
        rows.append(row)
    return rows


def _gradient_rows(trl_grads: dict, candidate: Candidate) -> list[Row]:
    ratio, direction = gradient_statistics(trl_grads, candidate.gradients)
    bounds = candidate.bounds
    return [
        Row(
            "grad norm ratio",
            ratio,
            1.0,
            bounds.grad_norm,
            "ok" if abs(ratio - 1) <= bounds.grad_norm else "MISMATCH",
            kind="gradient",
        ),
        Row(
            "grad 1 - cosine",
            direction,
            0.0,
            bounds.grad_direction,
            "ok" if direction <= bounds.grad_direction else "MISMATCH",
            kind="gradient",
        ),
    ]


def _subsets(names: list[str]) -> list[frozenset[str]]:
    """Every subset of ``names``, smallest first (the paper alone, then one departure at a time, …)."""
    return [frozenset(c) for size in range(len(names) + 1) for c in itertools.combinations(names, size)]


def verify(trainer, setting: Setting, trl_batch: dict, own: OwnBatch, policy_name: str) -> Result:
    """Compare TRL on ``trl_batch`` (built by TRL's preprocessing and collator) with the from-scratch values on
    ``own`` (the same pairs, built independently), for a trainer built with ``setting``. Each applicable
    departure may or may not explain a difference: the from-scratch side is computed for every combination of
    them, and the one with the fewest mismatches (then the fewest departures) is reported."""
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    trl_internals.clear_logged_metrics(trainer)
    tokens_before = trl_internals.train_tokens_seen(trainer)
    trl_loss = trainer.compute_loss(model, trl_batch)
    trl_loss.backward()
    trl_grads, trl_metrics = trainable_gradients(model), trl_internals.logged_metrics(trainer)
    model.zero_grad(set_to_none=True)

    sides = scratch_sides(trainer, own, tokens_before)
    dtype = model.get_input_embeddings().weight.dtype
    precision = f"{_name(dtype)}, gradient {_name(sides.grad_dtype)}; noise {sides.noise.layout:.1e}/token"
    applicable = [d.name for d in DEPARTURES if d.applies(setting)]
    best = None
    for departures in _subsets(applicable):
        candidate = scratch_candidate(setting, sides, departures)
        rows = _rows(trainer, trl_loss.item(), trl_metrics, trl_grads, candidate, own)
        score = (sum(row.verdict == "MISMATCH" for row in rows), len(departures))
        if best is None or score < best[0]:
            best = (score, candidate, rows)
    _, candidate, rows = best
    result = Result(setting.name, policy_name, precision, rows, departures=sorted(candidate.departures))
    if candidate.departures:
        paper = scratch_candidate(setting, sides)
        rows[0].reference, rows[0].variant = paper.loss, candidate.loss
        rows[0].verdict = "departure" if rows[0].verdict == "ok" else rows[0].verdict
    return result


def _rows(trainer, trl_loss: float, trl_metrics: dict, trl_grads: dict, candidate: Candidate, own: OwnBatch) -> list:
    bounds = candidate.bounds
    loss_row = Row("loss", trl_loss, candidate.loss, bounds.values["loss"])
    loss_row.verdict = "ok" if bounds.agrees("loss", trl_loss, candidate.loss) else "MISMATCH"
    return [
        loss_row,
        *_value_rows(trl_metrics, candidate),
        *_gradient_rows(trl_grads, candidate),
        _per_pair_row(trainer, own, candidate),
        _positive_control(trl_loss, trl_grads, candidate),
    ]


def _per_pair_row(trainer, own: OwnBatch, candidate: Candidate) -> Row:
    """Each pair alone through TRL (a batch of one, TRL's collator): its log-probs and rewards against the
    from-scratch values of that pair, so an error that cancels in a batch mean (pairs misaligned) shows. The row
    holds the pair and quantity that uses the largest share of its bound."""
    compared = []  # (share of the bound used, TRL value, from-scratch value, bound)
    with torch.no_grad():
        for i in range(len(own.kept)):  # TRL's i-th tokenized pair is the i-th kept one
            batch = trainer.data_collator([trainer.train_dataset[i]])
            trl_internals.clear_logged_metrics(trainer)
            trainer.compute_loss(trainer.model, {k: v.to(trainer.accelerator.device) for k, v in batch.items()})
            logged = trl_internals.logged_metrics(trainer)
            for key, values in candidate.per_pair.items():
                bound = float(candidate.bounds.per_pair[key][i])
                trl, ours = logged[key], float(values[i])
                share = abs(trl - ours) / bound if bound > 0 else (0.0 if trl == ours else math.inf)
                compared.append((share if math.isfinite(trl) else math.inf, trl, ours, bound))
    share, trl, ours, bound = max(compared)
    verdict = "ok" if share <= 1 else "MISMATCH"
    return Row(f"per pair ({len(own.kept)} pairs)", trl, ours, bound, verdict)


def _positive_control(trl_loss: float, trl_grads, candidate: Candidate) -> Row:
    """The check proves it can fail: TRL's loss and gradient made 1% larger must be reported as a mismatch (by
    the loss or by the gradient's norm ratio), with the bounds of this very batch."""
    scaled = {name: g * 1.01 for name, g in trl_grads.items()}
    bounds = candidate.bounds
    seen = not bounds.agrees("loss", trl_loss * 1.01, candidate.loss) or not bounds.gradients_agree(
        gradient_statistics(scaled, candidate.gradients)
    )
    return Row("positive control: 1% off", 0.01, 0.0, bounds.grad_norm, "ok" if seen else INSENSITIVE, kind="gradient")


INSENSITIVE = "insensitive"  # the positive control: the bounds of this batch are too wide to see a 1% error
