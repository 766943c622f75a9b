"""The paths a run takes beyond one ``compute_loss`` call, each checked through TRL's own code.

- batch construction: TRL's tokenized pairs and collated batch against the independently built ones
  (`batches`), at the configured ``max_length`` and at lengths that truncate and drop pairs, in both
  truncation modes;
- ties: when the policy is the reference every reward is 0, and the reward accuracy must be 0 (strict ">");
- ``evaluate()`` with reference log-probs precomputed and stored against computed on the fly, after the policy
  has moved away from the reference (a reference computed with the adapter left on shows only then);
- ``evaluate(eval_dataset=new)`` after training steps, with ``precompute_ref_log_probs``: TRL computes the new
  set's reference log-probs *then*, and they must still be the reference's (adapter disabled, or the separate
  reference model), checked against the from-scratch values on the same pairs;
- gradient accumulation through TRL's training loop, for several loss types, with equal and unequal
  micro-batches.

Each returns `Row`s with a verdict, as `verify` does for the loss. Every comparison is judged within the bounds
of the computation it compares (`tolerances`), measured on the same pairs and trainer.
"""

from __future__ import annotations

import statistics

import torch

from dpo_recipes.core import trl_internals
from dpo_recipes.crosscheck.batches import batch_differences, own_batch
from dpo_recipes.crosscheck.tolerances import Bounds, gradient_statistics
from dpo_recipes.crosscheck.verify import Row, Setting, scratch_candidate, scratch_sides, trainable_gradients
from dpo_recipes.trainer.packing import pack_trainer

TIMINGS = ("_runtime", "_per_second", "_time")  # eval metrics that measure the clock, not the model
ACCUMULATION_LOSSES = ("sigmoid", "ipo", "hinge")
ACCUMULATION_DEPARTURE = (
    "accumulation_averages_micro_batches: with micro-batches of unequal size, transformers divides each "
    "micro-batch's mean loss by the number of micro-batches (DPOTrainer does not take num_items_in_batch), so "
    "the accumulated gradient is the mean of micro-batch means, not the mean over all pairs: the pairs of a "
    "short last micro-batch weigh more."
)


def _batch_row(trainer, rows: list[dict], label: str) -> Row:
    args, tokenizer = trainer.args, trainer.processing_class
    own = own_batch(tokenizer, rows, args.max_length, args.truncation_mode)
    kept = len(trainer.train_dataset)
    if kept != len(own.kept):
        return Row(f"batch {label}: pairs kept", kept, len(own.kept), 0.0, "MISMATCH")
    if not own.kept:
        return Row(f"batch {label}: pairs kept", 0, 0, 0.0)
    collated = trainer.data_collator([trainer.train_dataset[i] for i in range(kept)])
    differing = batch_differences(collated, own, tokenizer.pad_token_id)
    verdict = "ok" if not any(differing.values()) else "MISMATCH"
    label += f", {own.truncated} truncated, {len(rows) - kept} dropped"
    return Row(f"batch {label}: sequences differing", sum(differing.values()), 0.0, 0.0, verdict)


def check_batch_construction(build, rows: list[dict], max_length: int | None, truncation_mode: str) -> list[Row]:
    """TRL's batch against the independent one: at the run's own settings, then at a length that truncates
    half the sequences (both modes) and one that leaves some prompts no room (keep_start drops those pairs)."""
    tokenizer = build(Setting(), max_length=max_length, truncation_mode=truncation_mode).processing_class
    lengths = own_batch(tokenizer, rows, None)
    full = sorted(len(s.ids) for s in lengths.sequences)
    prompts = sorted(s.completion.index(1) for s in lengths.sequences)
    cases = [(max_length, truncation_mode), (statistics.median_low(full), "keep_start")]
    cases += [(statistics.median_low(full), "keep_end"), (prompts[len(prompts) * 3 // 4], "keep_start")]
    rows_out = []
    for length, mode in dict.fromkeys(cases):
        trainer = build(Setting(), max_length=length, truncation_mode=mode, move=False)
        rows_out.append(_batch_row(trainer, rows, f"max_length={length} {mode}"))
    return rows_out


def check_ties(build) -> Row:
    """The policy before any step is the reference: every reward is exactly 0, so the accuracy TRL logs must be
    0 (the paper's accuracy counts r_chosen > r_rejected), not 1 or ½."""
    trainer = build(Setting(), move=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    trainer.model.train()  # TRL logs a training step's metrics under "train"
    trl_internals.clear_logged_metrics(trainer)
    with torch.no_grad():
        trainer.compute_loss(trainer.model, {k: v.to(trainer.accelerator.device) for k, v in batch.items()})
    accuracy = trl_internals.logged_metrics(trainer)["rewards/accuracies"]
    return Row("ties: rewards/accuracies", accuracy, 0.0, 0.0, "ok" if accuracy == 0.0 else "MISMATCH")


def _own(trainer, rows) -> object:
    args = trainer.args
    return own_batch(trainer.processing_class, rows.to_list(), args.max_length, args.truncation_mode)


def computation(trainer, rows, setting: Setting | None = None):
    """The from-scratch values of ``setting`` on ``rows`` with the trainer's current policy and reference, and
    their bounds (`verify.scratch_candidate`)."""
    return scratch_candidate(setting or Setting(), scratch_sides(trainer, _own(trainer, rows)))


def _worst_row(label: str, measured: dict, expected: dict, bounds: Bounds) -> Row:
    """One row for a dict of compared metrics: the one using the largest share of its bound; the verdict of all."""

    def share(key: str) -> float:
        bound = bounds.values.get(key, 0.0)
        difference = abs(measured[key] - expected[key])
        return difference / bound if bound > 0 else (0.0 if difference == 0 else float("inf"))

    worst = max(expected, key=share)
    verdict = "ok" if all(bounds.agrees(key, measured[key], expected[key]) for key in expected) else "MISMATCH"
    return Row(f"{label} ({worst})", measured[worst], expected[worst], bounds.values.get(worst, 0.0), verdict)


def check_precomputed_reference(build, rows) -> Row:
    """``evaluate()`` with stored reference log-probs (``precompute_ref_log_probs``) equals ``evaluate()`` with the
    reference computed on the fly, after the policy has moved: every eval metric."""
    results = {}
    for precompute in (False, True):
        trainer = build(Setting(), precompute_ref_log_probs=precompute, with_eval=True)
        metrics = trainer.evaluate()
        results[precompute] = {k: v for k, v in metrics.items() if not k.endswith(TIMINGS)}
    bounds = computation(trainer, rows).bounds.renamed("eval_")
    return _worst_row("evaluate(), precomputed ref", results[True], results[False], bounds)


EVAL_QUANTITIES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")


def check_new_eval_set_reference(build, new_rows) -> Row:
    """After two training steps with ``precompute_ref_log_probs``, ``evaluate(eval_dataset=new_rows)`` makes TRL
    compute the new pairs' reference log-probs at that moment; its eval metrics must equal the from-scratch values
    of the trained policy against the true reference on those pairs."""
    trainer = build(
        Setting(),
        precompute_ref_log_probs=True,
        max_steps=2,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        save_strategy="no",
    )
    trainer.train()
    metrics = trainer.evaluate(eval_dataset=new_rows)
    trainer.model.eval()
    expected = computation(trainer, new_rows)
    ours = {"eval_loss": expected.loss, **{f"eval_{key}": expected.metrics[key] for key in EVAL_QUANTITIES[1:]}}
    bounds = expected.bounds.renamed("eval_")
    return _worst_row("evaluate(new pairs) after training, precomputed ref", metrics, ours, bounds)


def _sgd_update(build, setting: Setting, rows, batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
    """The parameter update of one SGD step (learning rate 1) through TRL's training loop, pairs in order."""
    sgd = dict(optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0, max_steps=1)
    trainer = build(
        setting,
        rows=rows,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        train_sampling_strategy="sequential",
        save_strategy="no",
        **sgd,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    return {"update": torch.cat([(after[n].detach() - before[n]).flatten().double() for n in sorted(before)])}


def check_gradient_accumulation(build, rows) -> list[Row]:
    """One step over all pairs against the same step accumulated over micro-batches: single pairs (equal
    micro-batches: must match) and micro-batches of 3 (unequal when the pairs do not divide by 3: matched
    against the full batch, or against the mean of micro-batch updates, `ACCUMULATION_DEPARTURE`). Updates are
    compared as gradients are, within the gradient bounds of the same loss on the same pairs (`tolerances`)."""
    n, out = len(rows), []
    for loss_type in ACCUMULATION_LOSSES:
        setting = Setting((loss_type,))
        whole = _sgd_update(build, setting, rows, n, 1)
        if not whole["update"].norm() > 0:
            raise RuntimeError("the optimizer step changed nothing: the gradient-accumulation check would be vacuous")
        bounds = computation(build(setting), rows, setting).bounds
        for size in (1, 3):
            accumulated = _sgd_update(build, setting, rows, size, -(-n // size))
            ratio, direction = gradient_statistics(accumulated, whole)
            row = Row(f"{loss_type}: {n}x1 vs micro-batches of {size} (norm ratio)", ratio, 1.0, bounds.grad_norm)
            row.kind = "gradient"
            row.verdict = "ok" if bounds.gradients_agree((ratio, direction)) else "MISMATCH"
            if row.verdict == "MISMATCH" and n % size:
                parts = [
                    _sgd_update(build, setting, rows.select(range(i, min(i + size, n))), min(size, n - i), 1)
                    for i in range(0, n, size)
                ]
                variant = {"update": torch.stack([part["update"] for part in parts]).mean(dim=0)}
                statistics = gradient_statistics(accumulated, variant)
                row.variant = statistics[0]
                row.verdict = "departure" if bounds.gradients_agree(statistics) else "MISMATCH"
            out.append(row)
    return out


PACKING_SETTINGS = (Setting(), Setting(("ipo",)), Setting(ld_alpha=0.5), Setting(use_weighting=True))


def _loss_metrics_gradient(trainer) -> tuple[float, dict, dict]:
    """One training-mode ``compute_loss`` and backward over the trainer's whole train set (TRL's collator)."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    trl_internals.clear_logged_metrics(trainer)
    loss = trainer.compute_loss(trainer.model, {k: v.to(trainer.accelerator.device) for k, v in batch.items()})
    loss.backward()
    return loss.item(), trl_internals.logged_metrics(trainer), trainable_gradients(trainer.model)


def _same(a: tuple, b: tuple, bounds: Bounds) -> bool:
    loss_a, metrics_a, grads_a = a
    loss_b, metrics_b, grads_b = b
    values = all(bounds.agrees(key, metrics_a[key], metrics_b[key]) for key in metrics_b)
    gradients = bounds.gradients_agree(gradient_statistics(grads_a, grads_b))
    return bounds.agrees("loss", loss_a, loss_b) and values and gradients


ONE_ROW = 10**6  # row_tokens that put a whole batch in one row: every sequence shares it with others


def check_packing(build, rows) -> list[Row]:
    """Packed (`dpo_recipes.trainer.packing`) against padded: loss, every logged metric and the gradient, for losses
    that read the sequence sums, per-token positions (LD-DPO) and per-token distributions (WPO), in rows of the
    batch's width (the default) and with the whole batch in one row (so that every sequence shares its row and
    the document mask is exercised); and a negative control, one row without restarting the positions, which
    must be reported. Each within the bounds of the same loss computed on the same pairs."""
    out = []
    cases = [(setting, None) for setting in PACKING_SETTINGS] + [(Setting(), ONE_ROW)]
    for setting, row_tokens in cases:
        padded_trainer, packed_trainer = build(setting), build(setting)
        pack_trainer(packed_trainer, row_tokens=row_tokens)
        bounds = computation(padded_trainer, rows, setting).bounds
        padded, packed = _loss_metrics_gradient(padded_trainer), _loss_metrics_gradient(packed_trainer)
        verdict = "ok" if _same(packed, padded, bounds) else "MISMATCH"
        label = f"packed vs padded: {setting.name}" + (", one row" if row_tokens else "")
        out.append(Row(label, packed[0], padded[0], bounds.values["loss"], verdict))
    control = build(Setting())
    pack_trainer(control, reset_positions=False, row_tokens=ONE_ROW)
    padded_trainer = build(Setting())
    bounds = computation(padded_trainer, rows).bounds
    unmasked, padded = _loss_metrics_gradient(control), _loss_metrics_gradient(padded_trainer)
    verdict = "MISMATCH" if _same(unmasked, padded, bounds) else "ok"  # a control that passes proves nothing
    out.append(
        Row("packed negative control: positions not reset", unmasked[0], padded[0], bounds.values["loss"], verdict)
    )
    return out


def training_checks(build, rows, new_rows, max_length: int | None, truncation_mode: str) -> list[Row]:
    """Every check above, for trainers made by ``build`` (see `runner.trainer_factory`) on ``rows``; ``new_rows``
    are other pairs of the same split, for the eval set passed to ``evaluate()`` after training."""
    return [
        *check_batch_construction(build, rows, max_length, truncation_mode),
        check_ties(build),
        check_precomputed_reference(build, rows),
        check_new_eval_set_reference(build, new_rows),
        *check_gradient_accumulation(build, rows),
        *check_packing(build, rows),
    ]
