"""The reference guard: before the first optimizer step, the policy must *be* its reference.

DPO's implicit reward r = β·(log π(y|x) − log π_ref(y|x)) is 0 for every answer at the start of training: the
policy starts as the reference. If it is not 0 on the run's own first batch, the reference is not what the run
thinks it is, and every reward, margin and KL the run reports is measured from the wrong place. The guard
computes log π (the policy as it starts) and the log π_ref TRL will use — the LoRA policy with its adapter
disabled, a separate reference model, or the stored ``ref_*_logps`` of precomputed or loaded reference log-probs
— on the same padded batch, and stops the run with one line naming the likely cause when they differ beyond the
rounding bound. It is the cross-check of the run itself, on the real model and device, for one forward pass.

The bound is `dpo_recipes.crosscheck.tolerances`' noise model: per-token noise σ_t from the layout (measured: the
policy run again one sequence at a time), the rounding of the logits to their dtype, and a float32 floor for the
depth, in quadrature (`token_noise`); a sequence's bound is λ·√(Σ_t σ_t²) with λ = 6, its sum weighted as LD-DPO
weights it when ``ld_alpha`` is set (`ld_sequence`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from dpo_recipes.core.errors import UserError
from dpo_recipes.core.scoring import token_logps
from dpo_recipes.crosscheck.logprobs import ld_sequence
from dpo_recipes.crosscheck.tolerances import LAMBDA, U32, token_noise


class ReferenceMismatch(UserError):
    """The policy does not start as its reference."""


def reference_form(trainer, reference_file: str | None = None) -> str:
    """Where the run's reference log-probs come from."""
    if reference_file:
        return "reference log-probs file"
    if trainer.precompute_ref_logps:
        return "precomputed reference log-probs"
    return "separate reference model" if trainer.ref_model is not None else "policy with its adapter disabled"


LIKELY_CAUSES = {
    "reference log-probs file": "the file was computed for another model, tokenizer, chat template or run",
    "precomputed reference log-probs": "a stale datasets cache of reference log-probs, or another tokenizer or "
    "chat template than the one they were computed with",
    "separate reference model": "a wrong reference model (not the policy's starting weights), or another tokenizer",
    "policy with its adapter disabled": "an adapter already trained (a trained adapter loaded as the policy, or "
    "init_lora_weights false)",
}


def _one_at_a_time(model, batch: dict) -> torch.Tensor:
    """The policy's token log-probs with every sequence in its own forward (another layout, for the noise)."""
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        keep = batch["attention_mask"][i].bool()
        ids, completion = batch["input_ids"][i][keep][None], batch["completion_mask"][i][keep][None]
        alone = token_logps(model, ids, torch.ones_like(ids), completion).logps[0]
        row = torch.zeros(batch["input_ids"].shape[1] - 1, dtype=alone.dtype, device=alone.device)
        row[keep.nonzero().squeeze(-1)[1:] - 1] = alone  # where the kept tokens' predictions sit in the row
        rows.append(row)
    return torch.stack(rows)


@torch.no_grad()
def check_reference(trainer, rows: int | None = None, reference_file: str | None = None) -> dict:
    """log π = log π_ref on the first ``rows`` training pairs (default: one batch), within the rounding bound;
    a `ReferenceMismatch` otherwise. Returns what was checked, for metrics.json and the model card."""
    data = trainer.train_dataset
    count = min(rows or trainer.args.per_device_train_batch_size, len(data))
    batch = trainer.data_collator([data[i] for i in range(count)])
    device = trainer.accelerator.device
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    model = trainer.accelerator.unwrap_model(trainer.model)
    form = reference_form(trainer, reference_file)
    was_training = model.training
    model.eval()  # no dropout: the policy as TRL's reference sees it
    try:
        policy = token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], True)
        if "ref_chosen_logps" in batch:
            reference = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).double()
        else:
            reference_model = trainer.ref_model or trainer.model  # as TRL passes it
            reference = torch.cat(trainer.compute_ref_log_probs(reference_model, batch)).double()
        alone = _one_at_a_time(model, batch)
    finally:
        model.train(was_training)
    mask = policy.mask
    layout_sd = float(((policy.logps - alone) * mask).pow(2).sum().div(mask.sum().clamp(min=1)).sqrt())
    token_sd = token_noise(layout_sd, policy, model.config.get_text_config().num_hidden_layers)
    ld_alpha = getattr(trainer.args, "ld_alpha", None)
    if ld_alpha is None:  # sequence sums as TRL forms them, and the variance of each (independent token errors)
        sums, variance = policy.sequence(), token_sd.pow(2).sum(dim=1)
    else:
        sums, variance = ld_sequence(policy, ld_alpha), ld_sequence(replace(policy, logps=token_sd.pow(2)), ld_alpha**2)
    bounds = LAMBDA * variance.sqrt() + 4 * U32 * reference.abs()  # + the float32 sum TRL stores
    difference = sums - reference.to(sums.device)
    worst = int((difference.abs() / bounds).argmax())
    result = {
        "form": form,
        "sequences": int(difference.numel()),
        "max_abs_logp_difference": float(difference.abs().max()),
        "bound_at_worst": float(bounds[worst]),
        "max_implicit_reward": float(trainer.args.beta * difference.abs().max()),
        "passed": bool((difference.abs() <= bounds).all()),
    }
    if not result["passed"]:
        raise ReferenceMismatch(
            f"reference guard: before training the policy must equal its reference ({form}), but on the first "
            f"batch log π − log π_ref reaches {float(difference[worst]):+.4g} nats (bound {float(bounds[worst]):.2g})"
            f": likely {LIKELY_CAUSES[form]}"
        )
    return result
